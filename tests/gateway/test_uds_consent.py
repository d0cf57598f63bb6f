"""A multi-user scale that needs User Data Service consent (issue 14 item 6), through the real gateway over the
simulated radio (`sim.devices.uds_scale`, quirk ``uds-scale``).

The hub is provisioned for the scale's user 1 with that user's consent code. It writes the consent in each session
before subscribing, so the scale sends user 1's weights (each stored exactly once, under the resident) and the
guests' (stored unassigned); user 2's never leave the scale. With a wrong code the scale answers "user not
authorized": nothing of user 1's is stored, the refusal is reported and counted for `carehub doctor`, and the scale
is not tried again before the slow AUTH delay.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from test_ble_manager import START, Probe, Rig, _config, options

import sim.ble
from gateway.app import open_gateway
from gateway.ble import SessionStep
from gateway.ble_steps import consent_cursor_key
from gateway.config import ConfigError, parse_config
from gateway.events import ErrorClass, LinkDown, Misbehaviour
from protocols.gatt.uds import UNKNOWN_USER, UcpOpCode, UcpResponse, UcpResult
from protocols.keys import HubIdentity, PlatformIdentity, save_hub_identity, save_platform_public_keys
from protocols.record import MeasurementBody
from sim.broker import MosquittoBroker
from sim.clock import ManualClock
from sim.devices.base import Produced
from sim.devices.uds_scale import UdsScale

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
SCALE = "C0:00:00:00:10:05"
_links = itertools.count()


@contextlib.asynccontextmanager
async def scale_rig(
    tmp_path: Path, broker: MosquittoBroker, scale: UdsScale, lines: Sequence[str]
) -> AsyncIterator[Rig]:
    """The scale on a private link and the gateway, provisioned for it with `lines` in its [[devices]] table."""
    platform = PlatformIdentity.generate()
    hub = HubIdentity.generate("ble-test-hub")
    save_hub_identity(tmp_path / "hub.key", hub)
    save_platform_public_keys(tmp_path / "platform.pub", platform.public)
    text = _config(tmp_path, broker.url, [(SCALE, "scale")], {SCALE: lines})
    config = parse_config(text, tmp_path / "hub.toml")
    link = f"local:uds-consent-{next(_links)}"
    scanner, client = sim.ble.backend_for(link)
    assert isinstance(scale.clock, ManualClock)
    probe = Probe()
    try:
        async with contextlib.AsyncExitStack() as stack:
            radio = await stack.enter_async_context(sim.ble.open_peripheral_device(link, SCALE, scale.options.name))
            await stack.enter_async_context(scale.attach(radio))
            gw = await stack.enter_async_context(
                open_gateway(config, scanner_backend=scanner, client_backend=client, clock=scale.clock, ble=True)
            )
            probe.install(gw)
            yield Rig(gw, probe, scale.clock, platform, hub)
    finally:
        await sim.ble.close_centrals()


async def _bodies(r: Rig) -> list[MeasurementBody]:
    return [rec.body for rec in await r.measurements(SCALE) if isinstance(rec.body, MeasurementBody)]


def _raws(produced: Sequence[Produced]) -> list[bytes]:
    return sorted(p.raw for p in produced)


async def test_the_residents_weights_are_stored_once_and_the_other_users_never(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    clock = ManualClock(START)
    scale = UdsScale(options(SCALE, name="Family scale"), clock)
    async with scale_rig(tmp_path, mosquitto, scale, ["user_id = 1", "consent_code = 1234"]) as r:
        await scale.set_in_range(False)
        mine = [await scale.measure_as(1, 81.2), await scale.measure_as(1, 80.9)]
        theirs = [await scale.measure_as(2, 64.5)]
        guest = [await scale.measure(95.0)]
        await scale.set_in_range(True)
        await r.probe.until(lambda: len(r.probe.readings_of(SCALE)) == 3)
        await scale.wait_for(lambda: scale.held(1) == 0 and scale.held(UNKNOWN_USER) == 0)
        await r.probe.until(lambda: r.probe.status_with(SCALE, LinkDown))  # the session idled out
        # A later weighing of the resident comes in the next session, under a consent given again.
        await clock.advance(600)
        mine.append(await scale.measure_as(1, 80.7))
        await r.probe.until(lambda: len(r.probe.readings_of(SCALE)) == 4)
        await scale.wait_for(lambda: scale.held(1) == 0)
        bodies = await _bodies(r)
        assert sorted(b.raw for b in bodies) == _raws(mine + guest)  # every one exactly once; none of user 2's
        by_raw = {b.raw: b for b in bodies}
        assert [by_raw[p.raw].resident_id for p in mine] == ["r1", "r1", "r1"]
        assert [by_raw[p.raw].values["user_id"] for p in mine] == [1, 1, 1]
        assert by_raw[guest[0].raw].resident_id is None  # the guest follows the user-index mapping: unassigned
        assert scale.held(2) == 1
        assert theirs[0].raw not in by_raw
        consented = UcpResponse(UcpOpCode.CONSENT, UcpResult.SUCCESS)
        assert len(scale.answers) >= 2
        assert set(scale.answers) == {consented}
        assert r.gw.ble is not None
        assert not [k for k in r.gw.ble.stats.step_failures if k[0] is SessionStep.CONSENT]
        assert r.gw.ble.stats.unassigned == 1
        assert r.probe.status_with(SCALE, Misbehaviour) == []
        assert (await r.gw.hub.get_cursor(consent_cursor_key(SCALE))) in (None, 0)


async def test_a_wrong_consent_code_is_reported_and_retried_only_slowly(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    clock = ManualClock(START)
    scale = UdsScale(options(SCALE, name="Family scale"), clock)
    async with scale_rig(tmp_path, mosquitto, scale, ["user_id = 1", "consent_code = 4321"]) as r:
        assert r.gw.ble is not None
        ble = r.gw.ble
        await scale.set_in_range(False)
        mine = await scale.measure_as(1, 81.2)
        guest = await scale.measure(95.0)
        await scale.set_in_range(True)
        await r.probe.until(lambda: r.probe.status_with(SCALE, Misbehaviour) and r.probe.readings_of(SCALE))
        (refusal,) = r.probe.status_with(SCALE, Misbehaviour)
        assert refusal.reason == "UDS consent for user 1 refused: user not authorized"
        assert scale.answers == [UcpResponse(UcpOpCode.CONSENT, UcpResult.USER_NOT_AUTHORIZED)]
        assert ble.stats.step_failures[(SessionStep.CONSENT, ErrorClass.AUTH)] == 1
        assert await r.gw.hub.get_cursor(consent_cursor_key(SCALE)) == 1
        # Not tried again at the transient pace (1 s): the AUTH class's first delay is 48..60 s.
        wait = ble._states[SCALE].not_before - clock.monotonic()
        assert 45 <= wait <= 60
        await r.probe.until(lambda: r.probe.status_with(SCALE, LinkDown))
        # The next try, once the delay is over, is refused again: refusals in a row double the delay.
        await clock.advance(wait + 1)
        await scale.measure(94.0)
        await r.probe.until(lambda: len(r.probe.status_with(SCALE, Misbehaviour)) == 2)
        assert await r.gw.hub.get_cursor(consent_cursor_key(SCALE)) == 2
        assert ble._states[SCALE].not_before - clock.monotonic() >= 96 - 1
        assert ble.stats.step_failures[(SessionStep.CONSENT, ErrorClass.AUTH)] == 2
        await r.probe.until(lambda: len(r.probe.readings_of(SCALE)) == 2)
        bodies = await _bodies(r)
        assert mine.raw not in {b.raw for b in bodies}  # user 1's weight stayed on the scale
        assert guest.raw in {b.raw for b in bodies}
        assert all(b.resident_id is None for b in bodies)
        assert scale.held(1) == 1


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (["consent_code = 1234"], "needs user_id"),
        (["user_id = 1", "consent_code = 10000"], "consent_code"),
        (["user_id = 1", "consent_code = -1"], "consent_code"),
    ],
)
def test_a_consent_code_in_hub_toml_needs_its_user_and_fits_four_digits(
    tmp_path: Path, lines: list[str], words: str
) -> None:
    text = _config(tmp_path, "mqtt://127.0.0.1:9", [(SCALE, "scale")], {SCALE: lines})
    with pytest.raises(ConfigError) as refused:
        parse_config(text, tmp_path / "hub.toml")
    assert words in str(refused.value)
    good = _config(tmp_path, "mqtt://127.0.0.1:9", [(SCALE, "scale")], {SCALE: ["user_id = 0", "consent_code = 0"]})
    (device,) = parse_config(good, tmp_path / "hub.toml").devices
    assert (device.user_id, device.consent_code) == (0, 0)


class _FailingScale(UdsScale):
    """A scale that cannot take any consent right now ("operation failed")."""

    def _answer(self, connection: object, request: object) -> UcpResponse:
        return UcpResponse(UcpOpCode.CONSENT, UcpResult.OPERATION_FAILED)


async def test_a_consent_the_scale_cannot_take_is_a_protocol_step_failure_not_a_slow_retry(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Only a refusal the installer must fix (a wrong code, no such user) slows the scale's retries and reaches
    `carehub doctor`; "operation failed" is the scale's passing trouble: counted, reported, the session goes on."""
    clock = ManualClock(START)
    scale = _FailingScale(options(SCALE, name="Family scale"), clock)
    async with scale_rig(tmp_path, mosquitto, scale, ["user_id = 1", "consent_code = 1234"]) as r:
        assert r.gw.ble is not None
        await scale.set_in_range(False)
        guest = await scale.measure(95.0)
        await scale.set_in_range(True)
        await r.probe.until(lambda: r.probe.readings_of(SCALE) and r.probe.status_with(SCALE, LinkDown))
        (report,) = r.probe.status_with(SCALE, Misbehaviour)
        assert report.reason == "UDS consent for user 1: operation failed"
        assert r.gw.ble.stats.step_failures[(SessionStep.CONSENT, ErrorClass.PROTOCOL)] == 1
        assert r.gw.ble._states[SCALE].not_before <= clock.monotonic()
        assert await r.gw.hub.get_cursor(consent_cursor_key(SCALE)) is None
        assert [b.raw for b in await _bodies(r)] == [guest.raw]
