"""The installation test ends a meter's test with the re-pair instruction when the meter refuses the hub (an AUTH
failure: it lost its bond, or wants the PIN it shows), instead of waiting out the test for a reading that cannot
come (issue 14 item 3)."""

from __future__ import annotations

from null_sink import NullSink

from gateway.config import DeviceConfig, DeviceKind
from gateway.events import ErrorClass, LinkFailed
from gateway.provision.testrun import TappingSink

CUFF = "C0:00:00:00:0A:61"


async def test_a_meter_refusing_the_hub_during_the_test_is_a_refusal_with_the_re_pair_command() -> None:
    tap = TappingSink(NullSink())
    cuff = DeviceConfig(CUFF, DeviceKind.BLOOD_PRESSURE, "r1", None, None, None)
    await tap.report(LinkFailed(cuff, ErrorClass.TRANSIENT, "le-connection-abort-by-local"))
    assert tap.arrivals.empty()  # a transient failure is retried: the test keeps waiting
    await tap.report(LinkFailed(cuff, ErrorClass.AUTH, "encrypt C0:00:00:00:0A:61: HCI 0x06 PIN or Key Missing"))
    arrival = tap.arrivals.get_nowait()
    assert (arrival.address, arrival.what) == (CUFF, "refused")
    assert arrival.refusal is not None
    assert arrival.refusal.what.startswith(f"{CUFF} refused the hub (it lost its bond, or wants the PIN it shows")
    assert f"carehub provision pair {CUFF} --resident r1 --kind blood_pressure" in arrival.refusal.fix
