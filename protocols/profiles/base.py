"""The shape of a device profile: everything carehub knows about one kind of device, in one value.

A :class:`DeviceProfile` names the kind's GATT service and how it advertises, the characteristics the hub subscribes
to and how each is delivered, whether the hub bonds before subscribing, whether it reads stored records through the
Record Access Control Point and by which record position, how a decoded measurement becomes vital signs, what the
installer is told, and which simulated peripheral stands for it. Profiles are pure data and pure functions
(``protocols`` is sans-I/O); the simulator's peripheral is named by its import path (``"sim.devices.cgm:CgmSensor"``)
and resolved on the sim side (``sim.devices.registry``), so ``protocols`` never imports ``sim``.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from protocols.devices import DeviceKind
from protocols.gatt.common import Measurement
from protocols.vitals import VitalReading

__all__ = ["Channel", "Delivery", "DeviceProfile", "SessionClock"]


class Delivery(enum.StrEnum):
    """How a peripheral sends a characteristic's values."""

    INDICATE = "indicate"  # confirmed by the hub's ATT layer: a stored reading is dropped only after it
    NOTIFY = "notify"  # unconfirmed: a live value, or a record a RACP report selected


@dataclass(frozen=True, slots=True)
class Channel:
    """One characteristic the hub subscribes to, its codec and how it is delivered."""

    codec: type[Measurement]
    delivery: Delivery

    @property
    def uuid(self) -> int:
        """The 16-bit characteristic UUID."""
        return self.codec.UUID


@dataclass(frozen=True, slots=True)
class SessionClock:
    """How a device that keeps relative time says when its readings were taken: `uuid` is read once per connection
    and `minutes_now` decodes how many minutes its session has run (so the session started that long before the
    hub's time of the read); `minutes_of` is a measurement's minutes since the session start.

    ``minutes_now`` raises ``DecodeError`` for a value it cannot read; ``minutes_of`` gives None for a measurement
    that carries no time offset."""

    uuid: int
    minutes_now: Callable[[bytes], int]
    minutes_of: Callable[[Measurement], int | None]


def _no_position(_m: Measurement) -> int | None:
    return None


def _nothing(_m: Measurement) -> VitalReading | None:
    return None


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """One kind of device.

    Attributes:
        kind: the kind (the word in ``hub.toml`` and scenario files).
        label: what the installer sees ("Blood pressure cuff").
        service: the GATT service that identifies the kind (a SIG number, or carehub's own 128-bit UUID).
        service_in_advert: devices of this kind sold today put `service` in the advertising PDU itself, where a
            passive scan sees it (``gateway.discovery``).
        channels: the characteristics subscribed to, in order, with their codecs.
        needs_bond: the hub pairs before subscribing (the kind's products encrypt their measurements).
        racp: stored records are read through the Record Access Control Point (0x2A52) at each connection.
        record_position: a measurement's place in the device's record store (the RACP filter value: a glucose
            meter's sequence number, a CGM's time offset), which also anchors the record's stable id; None for none.
        observe: the vital signs of a decoded measurement of one of `channels` (None: nothing to judge).
        instructions: how the installer makes the device advertise for pairing.
        test_prompt: what the installation test asks for.
        sim_peripheral: ``"module:Class"`` of the simulated peripheral (resolved by ``sim.devices.registry``).
        silent_after: how long a device of this kind may go unheard before the hub warns (``device.silent``).
        session_clock: for a device that stamps readings relative to its session start (a CGM), how the hub learns
            when each was taken; None for devices with their own clock (or none).
    """

    kind: DeviceKind
    label: str
    service: int | uuid.UUID
    service_in_advert: bool
    channels: tuple[Channel, ...]
    needs_bond: bool
    instructions: str
    test_prompt: str
    sim_peripheral: str
    racp: bool = False
    record_position: Callable[[Measurement], int | None] = _no_position
    observe: Callable[[Measurement], VitalReading | None] = _nothing
    silent_after: timedelta = timedelta(hours=36)  # a daily meter gets a day and a half
    session_clock: SessionClock | None = None

    def __post_init__(self) -> None:
        if self.racp and self.record_position is _no_position:
            raise ValueError(f"{self.kind}: a RACP profile needs record_position")
        module, colon, name = self.sim_peripheral.partition(":")
        if not (module and colon and name):
            raise ValueError(f"{self.kind}: sim_peripheral must be 'module:Class', not {self.sim_peripheral!r}")

    @property
    def uuids(self) -> tuple[int, ...]:
        """The subscribed characteristics' UUIDs."""
        return tuple(c.uuid for c in self.channels)

    @property
    def service_uuid(self) -> str:
        """The service as a lower-case 128-bit UUID string (what bleak reports)."""
        if isinstance(self.service, uuid.UUID):
            return str(self.service)
        return f"0000{self.service:04x}-0000-1000-8000-00805f9b34fb"
