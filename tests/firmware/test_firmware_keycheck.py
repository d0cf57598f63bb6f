"""The firmware's key check and provisioning line, across interpreters (issue 16 item 3, docs/protocol.md §9.7).

CPython plays the hub: its :class:`~protocols.pendant.KeyChallenge` goes to the firmware running under the
MicroPython unix port (``firmware/tests/hub_bridge.py``), and the answer it indicates must verify with
:meth:`~protocols.pendant.KeyAnswer.verify` under the pendant's key and id, and fail under any other key. The
``mpremote exec`` line the hub prints (and ``firmware/README.md`` documents) is run under MicroPython against a
temporary root and must provision exactly the id and key it names.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_firmware import FIRMWARE, KEY, PENDANT_ID, _Bridge, _mpy_eval, needs_micropython

from gateway.provision.radio import LOAD_PENDANT_KEY
from protocols.errors import AuthenticationError
from protocols.pendant import KeyAnswer, KeyChallenge

ADDRESS = "C0:11:22:33:44:5A"


@needs_micropython
def test_firmware_answers_a_cpython_challenge_under_its_key(tmp_path: Path) -> None:
    with _Bridge(tmp_path) as bridge:
        challenge = KeyChallenge.fresh()
        words = bridge.ask(f"keycheck {bytes(challenge).hex()}").split()
        assert words[:4] == ["KEYCHECK", "0", "ACTED", "1"], words
        answer = KeyAnswer.from_bytes(bytes.fromhex(words[5]))
        answer.verify(challenge, PENDANT_ID, KEY)
        with pytest.raises(AuthenticationError, match="does not verify"):
            answer.verify(challenge, PENDANT_ID, bytes(range(1, 33)))
        with pytest.raises(AuthenticationError):
            answer.verify(KeyChallenge.fresh(), PENDANT_ID, KEY)  # an answer to another nonce is stale
        assert bridge.ask("read keycheck") == f"READ 0 {bytes(answer).hex()}"
        # a malformed challenge: the write succeeds at the ATT layer, nothing is answered
        assert bridge.ask(f"keycheck {bytes(challenge).hex()[:-2]}") == "KEYCHECK 0 ACTED 0 INDICATED -"
        # a press after a key check is still an ordinary event (the challenge queued nothing)
        assert bridge.event("press")[1] == 1


def _exec_code(line: str) -> str:
    match = re.search(r'mpremote exec "([^"]+)"', line)
    assert match, line
    return match.group(1)


@needs_micropython
def test_the_printed_mpremote_line_provisions_the_address_and_key(tmp_path: Path) -> None:
    key = bytes(range(64, 96))
    line = LOAD_PENDANT_KEY.replace("ADDRESS", ADDRESS).replace("KEY", key.hex())
    code = _exec_code(line)
    assert "store.provision(''," in code  # the board's littlefs root (hal.ROOT)
    root = tmp_path / "flash"
    root.mkdir()
    on_unix = code.replace("store.provision('',", f"store.provision('{root}',")
    lines = _mpy_eval(f"{on_unix}\ns = store.Store('{root}')\nprint(s.pendant_id.decode())\nprint(s.key.hex())")
    assert lines == [ADDRESS, key.hex()]


def test_the_readme_documents_the_same_provisioning_and_no_usb_tool() -> None:
    readme = (FIRMWARE / "README.md").read_text(encoding="utf-8")
    assert "store.provision('', b'$ID', bytes.fromhex('$KEY'))" in readme
    assert _exec_code(LOAD_PENDANT_KEY).replace("ADDRESS", "$ID").replace("KEY", "$KEY") in readme
    assert "pendant-0001" not in readme
    assert "USB tool" not in readme
    assert "--pendant-key" in readme  # pairing proves the key (docs/protocol.md §9.7)
