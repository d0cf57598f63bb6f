"""A hub that takes whatever a BLE session or the installation test hands it and keeps none of it, for tests whose
subject is what happens before (or instead of) a reading reaches the hub."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.events import DeviceReport, PendantFrame, Reading


class NullSink:
    """A :class:`gateway.ble_types.ReadingSink` that stores nothing, has no cursors and confirms no pendant frame."""

    async def store_readings(self, readings: Sequence[Reading], cursor: tuple[str, int] | None = None) -> None:
        del readings, cursor

    async def get_cursor(self, key: str) -> int | None:
        del key
        return None

    async def report(self, event: DeviceReport) -> None:
        del event

    async def pendant_frame(self, frame: PendantFrame) -> bytes | None:
        del frame
        return None
