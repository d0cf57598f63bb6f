"""Each provisioning step, and each bad input leaving the configuration untouched: full disk, threshold typos,
a rejected enrollment, a tampered bundle; the TOML writer round-trips through the gateway's parser."""

# ruff: noqa: S106 - test broker passwords are fixed on purpose

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from community.enrollment import BundleError, create_bundle, read_bundle
from community.storage import SqliteStorage
from gateway.config import DeviceKind, load_config, render_config
from gateway.provision.errors import ConfigWriteError, EnrollmentRejectedError, ProvisionError, ThresholdInputError
from gateway.provision.files import HubPaths, load_state
from gateway.provision.steps import (
    ReferencePlatformEnroller,
    add_device,
    apply_thresholds,
    check_assignment,
    enroll_hub,
    init_hub,
    parse_edit,
    provision_pendant_key,
    set_resident,
)
from protocols.keys import PlatformIdentity, load_hub_identity, load_pendant_key, save_platform_identity

PLATFORM = PlatformIdentity.generate()


def full_disk(_fd: int, _data: bytes) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


def new_hub(tmp_path: Path, hub_id: str = "hub-0001") -> HubPaths:
    paths = HubPaths.for_config(tmp_path / "hub" / "hub.toml")
    init_hub(
        paths,
        hub_id=hub_id,
        platform=PLATFORM.public,
        broker_url="mqtts://broker.example:8883",
        username=hub_id,
        password="pw",
    )
    set_resident(paths, "r1", name="Wang Fang", language="zh")
    return paths


def test_init_writes_a_config_the_gateway_loads_and_private_keys(tmp_path):
    paths = new_hub(tmp_path)
    config = load_config(paths.config)
    assert config.hub_id == "hub-0001"
    assert config.broker.tls
    assert config.broker.port == 8883
    assert config.storage_path == paths.root / "data" / "outbox.db"
    assert stat.S_IMODE(paths.hub_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.config.stat().st_mode) == 0o600  # it holds the broker password
    assert stat.S_IMODE(paths.keys.stat().st_mode) == 0o700
    assert load_state(paths).done("init")


def test_init_again_keeps_identity_residents_and_devices(tmp_path):
    paths = new_hub(tmp_path)
    key_before = paths.hub_key.read_bytes()
    add_device(paths, address="c0:00:00:00:00:01", kind=DeviceKind.BLOOD_PRESSURE, resident="r1", user_id=2)
    result = init_hub(
        paths,
        hub_id="hub-0001",
        platform=PLATFORM.public,
        broker_url="mqtts://broker.example:8883",
        username="hub-0001",
        password="pw",
    )
    assert not result.created_identity
    assert paths.hub_key.read_bytes() == key_before
    assert [d.address for d in result.config.devices] == ["C0:00:00:00:00:01"]
    assert result.config.devices[0].user_id == 2


def test_init_refuses_another_hub_id_in_the_same_directory(tmp_path):
    paths = new_hub(tmp_path)
    before = paths.config.read_bytes()
    with pytest.raises(ProvisionError, match="already the config of hub 'hub-0001'") as info:
        init_hub(
            paths, hub_id="hub-0002", platform=PLATFORM.public, broker_url="mqtt://b", username=None, password=None
        )
    assert "fresh --config directory" in info.value.fix
    assert paths.config.read_bytes() == before


@pytest.mark.parametrize(("hub_id", "url"), [("Hub_1", "mqtt://b:1883"), ("hub-1", "http://b"), ("hub-1", "mqtt://")])
def test_init_refuses_bad_input_before_writing_anything(tmp_path, hub_id, url):
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    with pytest.raises(ProvisionError):
        init_hub(paths, hub_id=hub_id, platform=PLATFORM.public, broker_url=url, username=None, password=None)
    assert not paths.config.exists()
    assert not paths.hub_key.exists()


def test_full_disk_leaves_a_working_config_untouched(tmp_path):
    paths = new_hub(tmp_path)
    before = paths.config.read_bytes()
    with pytest.raises(ConfigWriteError) as info:
        set_resident(paths, "r2", name="Li Na", writer=full_disk)
    assert "No space left" in info.value.what
    assert "free space" in info.value.fix
    assert paths.config.read_bytes() == before
    with pytest.raises(ConfigWriteError):
        apply_thresholds(paths, "r1", profiles=["copd"], writer=full_disk)
    assert paths.config.read_bytes() == before
    assert [p.name for p in paths.root.iterdir() if p.name.endswith(".tmp")] == []
    load_config(paths.config)


def test_full_disk_on_a_blank_hub_writes_no_config(tmp_path):
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    with pytest.raises(ConfigWriteError):
        init_hub(
            paths,
            hub_id="hub-1",
            platform=PLATFORM.public,
            broker_url="mqtt://b",
            username=None,
            password=None,
            writer=full_disk,
        )
    assert not paths.config.exists()


def test_thresholds_profile_and_edit_are_validated_and_written(tmp_path):
    paths = new_hub(tmp_path)
    resolved = apply_thresholds(
        paths, "r1", profiles=["hypertension", "copd"], edits=[parse_edit("bp.systolic.critical_high=175")]
    )
    assert resolved.as_dict()["bp.systolic.critical_high"] == 175.0
    assert resolved.as_dict()["bp.diastolic.critical_high"] == 110.0  # the hypertension preset
    resident = load_config(paths.config).resident("r1")
    assert resident.profiles == ("hypertension", "copd")
    assert dict(resident.thresholds) == {"bp.systolic.critical_high": 175.0}
    apply_thresholds(paths, "r1", edits=[parse_edit("bp.systolic.critical_high=default")])
    assert dict(load_config(paths.config).resident("r1").thresholds) == {}
    assert load_config(paths.config).resident("r1").profiles == ("hypertension", "copd")


@pytest.mark.parametrize(
    ("edit", "key", "fix"),
    [
        ("bp.systolic.critcal_high=175", "bp.systolic.critcal_high", "did you mean bp.systolic.critical_high?"),
        ("bp.systolic.critical_high", "bp.systolic.critical_high", "write it like"),
        ("spo2.low.critical=ninety", "spo2.low.critical", "unit"),
        ("spo2.low.critical=nan", "spo2.low.critical", "real number"),
    ],
)
def test_threshold_typos_are_refused_naming_the_key(edit, key, fix):
    with pytest.raises(ThresholdInputError) as info:
        parse_edit(edit)
    assert info.value.key == key
    assert fix in info.value.fix


@pytest.mark.parametrize(
    ("profiles", "edit", "key", "fix"),
    [
        (None, "bp.systolic.critical_high=1750", "bp.systolic.critical_high", "unit"),
        (None, "bp.systolic.warning_high=190", "bp.systolic.warning_high", "looser"),
        (["hypertensoin"], None, "hypertensoin", "did you mean hypertension?"),
    ],
)
def test_impossible_thresholds_leave_the_config_untouched(tmp_path, profiles, edit, key, fix):
    paths = new_hub(tmp_path)
    before = paths.config.read_bytes()
    with pytest.raises(ThresholdInputError) as info:
        apply_thresholds(paths, "r1", profiles=profiles, edits=[parse_edit(edit)] if edit else [])
    assert info.value.key == key
    assert fix in info.value.fix
    assert paths.config.read_bytes() == before


def test_thresholds_for_an_unknown_resident_say_how_to_add_them(tmp_path):
    paths = new_hub(tmp_path)
    with pytest.raises(ProvisionError) as info:
        apply_thresholds(paths, "r9", profiles=["copd"])
    assert "carehub provision resident r9" in info.value.fix


def test_steps_before_init_say_to_run_init(tmp_path):
    paths = HubPaths.for_config(tmp_path / "hub.toml")
    with pytest.raises(ProvisionError) as info:
        set_resident(paths, "r1")
    assert "carehub provision init" in info.value.fix


def test_pendant_key_is_generated_once_private_and_referenced(tmp_path):
    paths = new_hub(tmp_path)
    path, key, fresh = provision_pendant_key(paths, "c0:00:00:00:00:0a")
    assert fresh
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert provision_pendant_key(paths, "C0:00:00:00:00:0A") == (path, key, False)  # kept, not regenerated
    config = add_device(
        paths, address="C0:00:00:00:00:0A", kind=DeviceKind.PENDANT, resident="r1", pendant_key_file=path
    )
    assert config.devices[0].pendant_key_file == path
    assert load_pendant_key(path) == ("C0:00:00:00:00:0A", key)


def test_device_for_an_unknown_resident_is_refused(tmp_path):
    paths = new_hub(tmp_path)
    before = paths.config.read_bytes()
    with pytest.raises(ProvisionError):
        add_device(paths, address="C0:00:00:00:00:01", kind=DeviceKind.SCALE, resident="nobody")
    assert paths.config.read_bytes() == before


def platform_config(tmp_path: Path) -> Path:
    save_platform_identity(tmp_path / "platform.key", PLATFORM)
    config = tmp_path / "platform.toml"
    config.write_text(
        '[broker]\nurl = "mqtt://127.0.0.1:1"\n[storage]\ndatabase = "platform.db"\n'
        '[keys]\nidentity = "platform.key"\n',
        encoding="utf-8",
    )
    return config


async def test_enrollment_is_idempotent_and_a_key_clash_is_rejected(tmp_path):
    paths = new_hub(tmp_path)
    enroller = ReferencePlatformEnroller(platform_config(tmp_path))
    assert "enrolled hub-0001" in await enroll_hub(paths, enroller)
    assert "already enrolled" in await enroll_hub(paths, enroller)

    other = new_hub(tmp_path / "other")  # a second hub claiming the same id with another key
    with pytest.raises(EnrollmentRejectedError) as info:
        await enroll_hub(other, enroller)
    assert "--replace" in info.value.fix
    async with SqliteStorage(tmp_path / "platform.db") as storage:
        hubs = await storage.hubs()
    assert bytes(hubs["hub-0001"]) == bytes(load_hub_identity(paths.hub_key).verify_key)  # the clash changed nothing
    assert "enrolled hub-0001" in await enroll_hub(other, enroller, replace=True)


async def test_enrollment_at_an_unusable_platform_is_rejected_with_a_fix(tmp_path):
    paths = new_hub(tmp_path)
    with pytest.raises(EnrollmentRejectedError) as info:
        await enroll_hub(paths, ReferencePlatformEnroller(tmp_path / "missing.toml"))
    assert "--platform-config" in info.value.fix
    assert not load_state(paths).done("enroll")


def test_bundle_round_trip_and_tampering():
    data = create_bundle(PLATFORM, hub_id="hub-7", broker_url="mqtts://b:8883", username="hub-7", password="pw")
    bundle = read_bundle(data, expect_key_id=PLATFORM.public.key_id)
    assert (bundle.hub_id, bundle.username, bundle.password) == ("hub-7", "hub-7", "pw")
    assert bytes(bundle.platform.box_key) == bytes(PLATFORM.public.box_key)
    with pytest.raises(BundleError, match="signature"):
        read_bundle(data.replace(b"mqtts://b:8883", b"mqtts://evil:8883"))
    with pytest.raises(BundleError, match="not the expected"):
        read_bundle(data, expect_key_id="0000000000000000")
    with pytest.raises(BundleError):
        read_bundle(b"{}")


@given(st.text(min_size=1, max_size=40))
def test_any_name_survives_the_toml_writer(name):
    text = render_config(
        {
            "hub": {"id": "hub-1", "key_file": "k"},
            "platform": {"public_key_file": "p"},
            "broker": {"url": "mqtt://b", "password": name},
            "storage": {"path": "o.db"},
            "residents": [{"id": "r1", "name": name, "thresholds": {"bp.systolic.critical_high": 175.0}}],
        }
    )
    from gateway.config import parse_config  # noqa: PLC0415

    config = parse_config(text, Path("/x/hub.toml"))
    assert config.residents[0].name == name
    assert config.broker.password == name


@pytest.mark.parametrize("text", ["hello", "C0:11:00:00:00:0", "C0:11:00:00:00:001", "C0-11-00-00-00-01", ""])
def test_a_malformed_address_is_refused_before_the_radio(tmp_path, text):
    """Issue 16.4: malformed addresses waited out the pairing timeout; they are refused at once, naming the fix."""
    paths = new_hub(tmp_path)
    with pytest.raises(ProvisionError) as info:
        check_assignment(paths, text, "r1")
    assert "not a Bluetooth address" in str(info.value)
    assert "carehub provision scan" in info.value.fix


def test_a_device_of_another_resident_is_not_moved_silently(tmp_path):
    """Issue 16.4: pairing a device for another resident silently moved it (and its readings) to them."""
    paths = new_hub(tmp_path)
    set_resident(paths, "r2", name="Li Na")
    add_device(paths, address="C0:00:00:00:00:01", kind=DeviceKind.BLOOD_PRESSURE, resident="r1")
    before = paths.config.read_bytes()
    with pytest.raises(ProvisionError) as info:
        add_device(paths, address="c0:00:00:00:00:01", kind=DeviceKind.BLOOD_PRESSURE, resident="r2")
    assert "paired for resident 'r1'" in str(info.value)
    assert "--move" in info.value.fix
    assert paths.config.read_bytes() == before
    assert check_assignment(paths, "c0:00:00:00:00:01", "r1") == "C0:00:00:00:00:01"  # same resident: re-pair
    config = add_device(paths, address="C0:00:00:00:00:01", kind=DeviceKind.BLOOD_PRESSURE, resident="r2", move=True)
    assert [(d.address, d.resident) for d in config.devices] == [("C0:00:00:00:00:01", "r2")]
