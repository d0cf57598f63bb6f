"""bleak scanner backend over bumble: advertisements from the simulated radio become bleak's data."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.uuids import normalize_uuid_str
from bumble.core import UUID, AdvertisingData
from bumble.device import Advertisement

from sim.ble.central import Central, get_central
from sim.ble.config import LinkSpec, current_settings

__all__ = ["BumbleScanner", "advertisement_data"]

_UUID_LISTS: dict[int, int] = {
    AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS: 2,
    AdvertisingData.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    AdvertisingData.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS: 4,
    AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS: 16,
}
_SERVICE_DATA: dict[int, int] = {
    AdvertisingData.SERVICE_DATA_16_BIT_UUID: 2,
    AdvertisingData.SERVICE_DATA_32_BIT_UUID: 4,
    AdvertisingData.SERVICE_DATA_128_BIT_UUID: 16,
}


def bleak_uuid(uuid: UUID) -> str:
    """bumble UUID → bleak's normalized 128-bit lower-case string."""
    return normalize_uuid_str(uuid.to_hex_str("-"))


def advertisement_data(advertisement: Advertisement) -> AdvertisementData:
    """Decode one bumble advertisement into bleak's ``AdvertisementData``.

    Works from the raw AD structures, which are untrusted: short or malformed fields are skipped rather than
    raising. A structure repeated (the simulated controller echoes advertising data in its scan response) counts
    once.
    """
    local_name: str | None = None
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    uuids: list[str] = []
    tx_power: int | None = None
    for ad_type, payload in advertisement.data.ad_structures:
        if ad_type in (AdvertisingData.COMPLETE_LOCAL_NAME, AdvertisingData.SHORTENED_LOCAL_NAME):
            if local_name is None or ad_type == AdvertisingData.COMPLETE_LOCAL_NAME:
                local_name = payload.decode("utf-8", errors="replace")
        elif (size := _UUID_LISTS.get(ad_type)) is not None:
            for offset in range(0, len(payload) - size + 1, size):
                text = bleak_uuid(UUID.from_bytes(payload[offset : offset + size]))
                if text not in uuids:
                    uuids.append(text)
        elif (size := _SERVICE_DATA.get(ad_type)) is not None and len(payload) >= size:
            service_data[bleak_uuid(UUID.from_bytes(payload[:size]))] = bytes(payload[size:])
        elif ad_type == AdvertisingData.MANUFACTURER_SPECIFIC_DATA and len(payload) >= 2:
            manufacturer[int.from_bytes(payload[:2], "little")] = bytes(payload[2:])
        elif ad_type == AdvertisingData.TX_POWER_LEVEL and len(payload) == 1:
            tx_power = int.from_bytes(payload, "little", signed=True)
    return AdvertisementData(
        local_name=local_name,
        manufacturer_data=manufacturer,
        service_data=service_data,
        service_uuids=uuids,
        tx_power=tx_power,
        rssi=advertisement.rssi,
        platform_data=(advertisement,),
    )


def _matches(patterns: Sequence[tuple[Any, ...]], structures: Sequence[tuple[int, bytes]]) -> bool:
    """Whether an AD structure holds a pattern's content at its start position (BlueZ or_patterns semantics)."""
    for start, ad_type, content in patterns:
        end = start + len(content)
        if any(kind == ad_type and data[start:end] == bytes(content) for kind, data in structures):
            return True
    return False


class BumbleScanner(BaseBleakScanner):
    """``BleakScanner(..., backend=BumbleScanner)``: scans the link from :func:`sim.ble.configure`.

    Use :func:`sim.ble.backend_for` for classes bound to a specific link.
    """

    link: ClassVar[LinkSpec | None] = None

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, [normalize_uuid_str(u) for u in service_uuids] if service_uuids else None)
        self._active = scanning_mode != "passive"
        # A passive scan with BlueZ or_patterns hears only adverts that match one of them (bluetoothd's advertisement
        # monitor), so code that works here also gets its adverts on a Pi.
        bluez = kwargs.get("bluez") or {}
        self._or_patterns = [] if self._active else [tuple(p) for p in bluez.get("or_patterns") or ()]
        self._link = type(self).link or current_settings().link
        self._central: Central | None = None
        self._remove: Callable[[], None] | None = None

    async def start(self) -> None:
        """Start scanning; ``seen_devices`` starts empty."""
        self.seen_devices = {}
        if self._remove is not None:
            return
        self._central = await get_central(self._link)
        self._remove = await self._central.add_scan_listener(self._on_advertisement, active=self._active)

    async def stop(self) -> None:
        """Stop scanning (the link keeps scanning while another scanner in this process still is)."""
        if self._remove is None or self._central is None:
            return
        self._remove()
        self._remove = None
        await self._central.update_scan()

    def _on_advertisement(self, advertisement: Advertisement) -> None:
        if not self._active and advertisement.is_scan_response:
            return  # a passive scanner sends no SCAN_REQ, so it never hears a scan response
        if self._or_patterns and not _matches(self._or_patterns, advertisement.data.ad_structures):
            return
        data = advertisement_data(advertisement)
        if not self.is_allowed_uuid(data.service_uuids):
            return
        address = advertisement.address.to_string(False)
        device = self.create_or_update_device(address, address, data.local_name, advertisement.address, data)
        self.call_detection_callbacks(device, data)
