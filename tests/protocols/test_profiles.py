"""The device-profile registry (issue 14 item 7): every kind has one profile, and each profile is coherent."""

from __future__ import annotations

import pytest

from protocols import gatt
from protocols.devices import DeviceKind
from protocols.gatt.cgm import CgmMeasurement
from protocols.profiles import PROFILES, DeviceProfile, kind_of_service, profile_of, profile_of_characteristic
from protocols.vitals import Vital


def test_every_kind_has_exactly_one_profile() -> None:
    assert set(PROFILES) == set(DeviceKind)
    assert all(p.kind is k for k, p in PROFILES.items())


@pytest.mark.parametrize("kind", list(DeviceKind), ids=str)
def test_a_profile_is_coherent(kind: DeviceKind) -> None:
    profile = profile_of(kind)
    assert kind_of_service(profile.service_uuid.upper()) is kind
    for channel in profile.channels:
        assert gatt.DECODERS[channel.uuid] == channel.codec.from_bytes  # the codec the hub decodes with
        assert profile_of_characteristic(channel.codec) is profile  # one characteristic, one kind
    assert profile.instructions
    assert profile.test_prompt
    assert profile.label


def test_services_are_distinct() -> None:
    services = [p.service_uuid for p in PROFILES.values()]
    assert len(services) == len(set(services))


def test_the_cgm_profile() -> None:
    cgm = profile_of(DeviceKind.CGM)
    assert cgm.service == 0x181F
    assert cgm.uuids == (0x2AA7,)
    assert cgm.racp
    assert cgm.needs_bond
    reading = CgmMeasurement.of(52, 35)
    assert cgm.record_position(reading) == 35
    assert cgm.observe(reading) is not None
    observed = cgm.observe(reading)
    assert observed is not None
    assert dict(observed.values) == {Vital.CGM_GLUCOSE: 52.0}
    assert not observed.unreliable
    assert cgm.observe(gatt.BatteryLevel(50)) is None


def test_a_racp_profile_needs_a_record_position() -> None:
    with pytest.raises(ValueError, match="record_position"):
        DeviceProfile(
            kind=DeviceKind.CGM,
            label="x",
            service=0x181F,
            service_in_advert=True,
            channels=(),
            needs_bond=False,
            instructions="x",
            test_prompt="x",
            sim_peripheral="sim.devices.cgm:CgmSensor",
            racp=True,
        )


def test_the_peripheral_is_named_by_import_path() -> None:
    with pytest.raises(ValueError, match="module:Class"):
        DeviceProfile(
            kind=DeviceKind.CGM,
            label="x",
            service=0x181F,
            service_in_advert=True,
            channels=(),
            needs_bond=False,
            instructions="x",
            test_prompt="x",
            sim_peripheral="sim.devices.cgm.CgmSensor",
        )
