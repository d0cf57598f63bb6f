"""The quirk cuffs of issue 14 item 5 (`sim.devices.quirks`), seen from the air: bleak over the sim backend on a
private link receives exactly the bytes each cuff logs, padded, with reserved flag bits, or cut short."""

from __future__ import annotations

import pytest
from test_devices import Inbox, bp_options, clock, hub, running, uuid  # the fixtures clock and hub too

from protocols import gatt
from protocols.errors import DecodeError
from sim.devices.blood_pressure import BloodPressureCuff
from sim.devices.quirks import PaddingCuff, RfuFlagsCuff, TruncatingCuff

__all__ = ["clock", "hub"]  # fixtures used by name


async def _indicated(cuff: BloodPressureCuff, hub) -> tuple[list[bytes], list[bytes]]:
    """Two readings: the bytes logged and the bytes the hub side received."""
    async with running(cuff, hub):
        produced = [await cuff.measure(131, 84, pulse=68), await cuff.measure(142, 91, pulse=72)]
        await cuff.wait_for(lambda: cuff.advertising)
        inbox = Inbox()
        async with hub.connect(cuff) as client:
            await client.start_notify(uuid(0x2A35), inbox)
            received = [await inbox.next() for _ in produced]
            await cuff.wait_for(lambda: cuff.stored_count() == 0)
    return [p.raw for p in produced], received


async def test_a_padding_cuff_sends_two_zero_bytes_after_each_measurement(hub, clock):
    logged, received = await _indicated(PaddingCuff(bp_options(), clock), hub)
    assert received == logged
    for raw, pulse in zip(received, (68, 72), strict=True):
        assert raw.endswith(b"\x00\x00")
        with pytest.raises(gatt.TrailingBytesError):
            gatt.decode(0x2A35, raw)
        tolerated = gatt.decode_tolerant(0x2A35, raw)
        assert tolerated.padding == b"\x00\x00"
        assert tolerated.measurement.as_dict()["pulse_rate"] == pulse
        assert bytes(tolerated.measurement) == raw[:-2]


async def test_an_rfu_flags_cuff_sets_bits_5_to_7_of_each_measurement(hub, clock):
    logged, received = await _indicated(RfuFlagsCuff(bp_options(), clock), hub)
    assert received == logged
    for raw in received:
        assert raw[0] & 0xE0 == 0xE0
        with pytest.raises(gatt.RfuFlagsError):
            gatt.decode(0x2A35, raw)
        tolerated = gatt.decode_tolerant(0x2A35, raw)
        assert tolerated.rfu_flags == 0xE0
        assert bytes(tolerated.measurement) == bytes([raw[0] & 0x1F]) + raw[1:]


async def test_a_truncating_cuff_sends_values_no_decoder_can_read(hub, clock):
    logged, received = await _indicated(TruncatingCuff(bp_options(), clock), hub)
    assert received == logged
    for raw in received:
        assert raw[0] & 0x10  # the flags promise a Measurement Status (uint16), the value's last field
        with pytest.raises(DecodeError, match="Measurement Status needs 2 byte\\(s\\), 0 left"):
            gatt.decode_tolerant(0x2A35, raw)
