"""`carehub doctor` shows, per meter, how many readings the hub decoded only tolerantly or kept raw (issue 14 item 5,
the ``decode:<address>`` cursor of :mod:`gateway.decode_counts`), and warns about undecodable ones."""

from __future__ import annotations

from pathlib import Path

from hub_files import new_hub
from provision_kit import device_check, write_test_report

from gateway.config import DeviceKind, load_config
from gateway.decode_counts import DecodeCounts, DecodeTally, decode_cursor_key
from gateway.outbox import open_outbox
from gateway.provision.doctor import Status
from gateway.provision.steps import add_device

CUFF = "C0:00:00:00:0E:01"


async def test_tolerated_readings_are_shown_and_raw_ones_make_a_warning(tmp_path: Path) -> None:
    paths = new_hub(tmp_path)
    add_device(paths, address=CUFF, kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
    write_test_report(paths, {"address": CUFF, "ok": True, "battery": 90})
    status, detail, _ = await device_check(paths.config, CUFF)
    assert status is Status.OK
    assert "tolerantly" not in detail

    storage = load_config(paths.config).storage_path
    async with open_outbox(storage) as outbox:
        await outbox.set_cursor(decode_cursor_key(CUFF), DecodeCounts(tolerated=4, raw=0).cursor_value())
    status, detail, _ = await device_check(paths.config, CUFF)
    assert status is Status.OK
    assert "4 reading(s) decoded tolerantly (padding or reserved flag bits)" in detail

    async with open_outbox(storage) as outbox:
        await outbox.set_cursor(decode_cursor_key(CUFF), DecodeCounts(tolerated=4, raw=2).cursor_value())
    status, detail, fix = await device_check(paths.config, CUFF)
    assert status is Status.WARN
    assert "2 undecodable reading(s) kept raw" in detail
    assert "carehub decode" in fix


def test_a_tally_restores_counts_and_refuses_what_it_did_not_write() -> None:
    tally = DecodeTally()
    assert tally.restore(CUFF, None)
    assert tally.restore(CUFF, "tolerated=3 raw=1")
    tally.count(CUFF, tolerated=True)
    tally.count(CUFF, raw=True)
    assert tally.get(CUFF) == DecodeCounts(4, 2)
    assert tally.cursors([CUFF, CUFF]) == {decode_cursor_key(CUFF): "tolerated=4 raw=2"}
    for bad in ("tolerated=-1 raw=0", "raw=1 tolerated=2", 7, b"tolerated=1 raw=1", "tolerated=1 raw=1 "):
        assert not DecodeTally().restore(CUFF, bad)
        assert DecodeCounts.parse(bad) is None
    assert DecodeCounts().describe() == ""
