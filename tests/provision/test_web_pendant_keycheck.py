"""The installer page pairs a pendant only once it proved its key (issue 16 item 3, docs/protocol.md §9.7): through
the page's API over the simulated radio, a mistyped key is refused with the one-line cause and nothing saved; the
right key is saved; an empty key field needs a key the hub already keeps."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from hub_files import new_hub
from provision_kit import PENDANT, PENDANT_KEY, Home

from gateway.config import load_config
from gateway.provision.pin import PinGate, issue_pin
from gateway.provision.radio import open_radio
from gateway.provision.web import WebSettings, make_app
from protocols.keys import load_pendant_key


async def test_the_page_refuses_a_mistyped_pendant_key_and_saves_the_proved_one(tmp_path: Path, home: Home) -> None:
    paths = new_hub(tmp_path, link=home.link)
    async with open_radio(home.link, keystore=paths.bonds) as backends:
        app = make_app(WebSettings(paths, link=home.link), gate=PinGate(paths), radio=backends)
        async with TestClient(TestServer(app)) as c:
            login = await c.post("/api/login", json={"pin": issue_pin(paths)})
            token = {"X-CSRF-Token": (await login.json())["csrf"]}

            async def pair(key: str) -> tuple[int, dict[str, object]]:
                home.pendant.wake()
                body = {"address": PENDANT, "resident": "r1", "kind": "pendant", "pendant_key": key}
                response = await c.post("/api/pair", json=body, headers=token)
                return response.status, await response.json()

            status, answer = await pair("")
            assert status == 400, answer
            assert "a pendant is paired with the key loaded into it" in str(answer["error"])
            status, answer = await pair(bytes(range(1, 33)).hex())
            assert status == 400, answer
            assert str(answer["error"]).startswith("the pendant's key does not match:")
            assert "mpremote" in str(answer["fix"])
            assert load_config(paths.config).devices == ()
            assert not paths.pendant_key(PENDANT).exists()
            status, answer = await pair(PENDANT_KEY.hex())
            assert status == 200, answer
            assert answer["note"] == "The pendant proved it holds this key."
            assert load_pendant_key(paths.pendant_key(PENDANT)) == (PENDANT, PENDANT_KEY)
            page = await (await c.get("/")).text()
            assert "USB tool" not in page
            assert "makes a new one" not in page
