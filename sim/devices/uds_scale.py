"""A multi-user bathroom scale that keeps each user's weights until a client gives that user's consent (UDS).

Shop scales for a family (Weight Scale Service 0x181D with the "multiple users" feature bit, plus the User Data
Service 0x181C) stamp each weight with the User ID of whoever stepped on (0xFF, the unknown user, for a guest) and
keep a memory per user. They send a registered user's weights only over a connection on which the client has
written that user's consent, with the consent code chosen when the user was registered, to the User Control Point
(0x2A9F); the answer is indicated on the same characteristic (codec: :mod:`protocols.gatt.uds`). A guest's weights
go to any subscribed client. A wrong consent code is answered "user not authorized" (0x05) and nothing of that
user's leaves the scale.

What this simulated scale does, by procedure:

* Register New User (0x01, consent code): takes the lowest free index below :attr:`UdsScale.max_users` and answers
  success with it, or "operation failed" when every index is taken;
* Consent (0x02, user index, consent code): success when the index is registered with that code (the user's weights
  are then indicated, each dropped once the hub confirmed it); "user not authorized" for a wrong code; "invalid
  parameter" for an index nobody registered;
* Delete User Data (0x03): forgets the consented user, its code and its weights; "user not authorized" without
  consent on this connection;
* a request that does not decode is answered with the response value its problem calls for (an unknown op code
  "op code not supported", anything else "invalid parameter"); an empty write, or one carrying the response op
  code, gets ATT error 0x0D (invalid attribute value length) since no response can name its op code;
* a write while indications of the User Control Point are off gets ATT error 0xFD (CCCD improperly configured), and
  one while the previous response is still being indicated ATT error 0xFE (procedure already in progress);
* Database Change Increment (0x2A99, read/write/notify) is per user and open only under consent (ATT error 0x80,
  "user data access not permitted", otherwise); User Index (0x2A9A) reads the consented user, 0xFF when none.

Consent lasts for the connection it was given on, as on the real scales: each hub session gives it again. bumble
ships no User Data Service profile class (``bumble.profiles`` has Battery, Device Information and Heart Rate among the
health ones), so this builds on the simulator's own GATT server, with the bytes from :mod:`protocols.gatt.uds`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from types import MappingProxyType

from bumble import att, gatt
from bumble.device import Connection, Device

from protocols.gatt.uds import (
    CONSENT_CODE_MAX,
    DATABASE_CHANGE_INCREMENT,
    SERVICE,
    UNKNOWN_USER,
    USER_CONTROL_POINT,
    USER_INDEX,
    Consent,
    DatabaseChangeIncrement,
    DeleteUserData,
    RegisterNewUser,
    UcpOpCode,
    UcpRequest,
    UcpResponse,
    UcpResult,
    UdsError,
    UserIndex,
    decode_request,
)
from protocols.gatt.weight import WeightMeasurement, WeightScaleFeature
from sim.clock import Clock
from sim.devices.base import P, Produced, SimDevice
from sim.devices.options import DeviceOptions
from sim.devices.vitals import Scale

__all__ = ["DEFAULT_USERS", "UdsScale"]

#: The users a scale built with no `users` has registered: user index -> consent code.
DEFAULT_USERS: Mapping[int, int] = MappingProxyType({1: 1234, 2: 4321})

# ATT error codes: UDS 1.0 "user data access not permitted"; the common profile's CCCD improperly configured and
# procedure already in progress (CSS Part B §1.2); Core's invalid attribute value length.
ATT_USER_DATA_ACCESS_NOT_PERMITTED = 0x80
ATT_CCCD_IMPROPERLY_CONFIGURED = 0xFD
ATT_PROCEDURE_ALREADY_IN_PROGRESS = 0xFE
ATT_INVALID_ATTRIBUTE_VALUE_LENGTH = 0x0D

_KG_STEP = 0.005  # the 0x2A9D field's resolution in kg
# 0x2A9E: time stamp supported (b0), multiple users supported (b1), weight resolution 0.05 kg (value 4 in b3-6).
_FEATURES = 0x01 | 0x02 | (4 << 3)


class UdsScale(Scale):
    """A family scale: weights per user, sent only under that user's consent (guests' to anyone)."""

    MEASURE_FIELDS = MappingProxyType({"kg": ("number", True), "user": ("number", False)})

    def __init__(
        self,
        options: DeviceOptions,
        clock: Clock,
        *,
        users: Mapping[int, int] | None = None,
        max_users: int = 4,
    ) -> None:
        """`users`: user index -> consent code, registered at the factory (default :data:`DEFAULT_USERS`)."""
        super().__init__(options, clock)
        registered = dict(DEFAULT_USERS if users is None else users)
        if not 1 <= max_users <= UNKNOWN_USER:
            raise ValueError(f"max_users must be 1..{UNKNOWN_USER}")
        for index, code in registered.items():
            if not 0 <= index < max_users or not 0 <= code <= CONSENT_CODE_MAX:
                raise ValueError(f"user {index} with consent code {code} does not fit this scale")
        self.max_users = max_users
        self.users = registered
        self.increments: dict[int, int] = dict.fromkeys(registered, 0)
        self.answers: list[UcpResponse] = []  # every User Control Point response indicated, in order
        self._memory: dict[int, deque[Produced]] = {}
        self._consent: tuple[Connection, int] | None = None
        self._responding = False
        self._kick = asyncio.Event()

    # ------------------------------------------------------------------ GATT

    def profile_services(self, device: Device) -> Iterable[gatt.Service]:
        # The weights are not left to the base's store-and-indicate: this scale chooses per user what it sends.
        self.measurement_char = self.characteristic(device, 0x2A9D, P.INDICATE)
        self.feature_char = self.characteristic(
            device, 0x2A9E, P.READ, read=lambda _c: bytes(WeightScaleFeature(_FEATURES))
        )
        self.ucp_char = self.characteristic(device, USER_CONTROL_POINT, P.WRITE | P.INDICATE, write=self._on_ucp)
        self.increment_char = self.characteristic(
            device,
            DATABASE_CHANGE_INCREMENT,
            P.READ | P.WRITE | P.NOTIFY,
            read=self._read_increment,
            write=self._write_increment,
        )
        self.index_char = self.characteristic(device, USER_INDEX, P.READ, read=self._read_index)
        return [
            gatt.Service(gatt.GATT_WEIGHT_SCALE_SERVICE, [self.measurement_char, self.feature_char]),
            gatt.Service(gatt.GATT_USER_DATA_SERVICE, [self.ucp_char, self.increment_char, self.index_char]),
        ]

    def advertised_uuids(self) -> list[str]:
        """Weight Scale and User Data, as family scales advertise."""
        return [f"{self.SERVICE_UUID:04X}", f"{SERVICE:04X}"]

    @contextlib.asynccontextmanager
    async def attach(self, device: Device) -> AsyncIterator[SimDevice]:
        """Attach as any scale, and send each user's weights as consent allows."""
        async with super().attach(device) as attached:
            self.spawn(self._deliver(), name=f"{self.id}-uds-deliverer")
            yield attached

    # ------------------------------------------------------------------ state

    @property
    def consented_user(self) -> int | None:
        """The user consented to on the current connection, if any."""
        if self._consent is None or self._connection is None or self._consent[0] is not self._connection:
            return None
        return self._consent[1]

    def held(self, user: int) -> int:
        """How many of `user`'s weights wait on the scale."""
        return len(self._memory.get(user, ()))

    def stored_count(self, characteristic_uuid: int | None = None) -> int:
        """Weights waiting, every user's included."""
        own = sum(len(q) for q in self._memory.values()) if characteristic_uuid in (None, 0x2A9D) else 0
        return super().stored_count(characteristic_uuid) + own

    # ------------------------------------------------------------------ measuring

    async def measure(self, kg: float, *, user: float | None = None) -> Produced:
        """Weigh `user` (a registered index; None or 0xFF: a guest), keep it in that user's memory, advertise."""
        self._require("measurement_char")
        index = UNKNOWN_USER if user is None else int(user)
        if index != UNKNOWN_USER and index not in self.users:
            raise ValueError(f"user {index} is not registered on {self.id}")
        reading = WeightMeasurement(round(kg / _KG_STEP), timestamp=self.device_datetime(), user_id=index)
        produced = self.record("2A9D", {"kg": kg, "user": index}, bytes(reading))
        self._memory.setdefault(index, deque(maxlen=self.options.memory_size)).append(produced)
        self._kick.set()
        self.wake()
        return produced

    async def measure_as(self, user: int, kg: float) -> Produced:
        """A weighing of user `user`."""
        return await self.measure(kg, user=user)

    def on_subscribed(self, characteristic: gatt.Characteristic[bytes], *, notify: bool, indicate: bool) -> None:
        """A hub turned indications on: send what it may have."""
        super().on_subscribed(characteristic, notify=notify, indicate=indicate)
        if indicate and characteristic is getattr(self, "measurement_char", None):
            self._kick.set()

    def _sendable(self) -> list[int]:
        consented = self.consented_user
        return [UNKNOWN_USER] if consented is None else [consented, UNKNOWN_USER]

    async def _deliver(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            for user in self._sendable():
                queue = self._memory.get(user)
                while queue and self.is_subscribed(self.measurement_char, indicate=True) and user in self._sendable():
                    head = queue[0]
                    if not await self.indicate(self.measurement_char, head.raw):
                        break
                    if queue and queue[0] is head:
                        queue.popleft()
                    self._notify_changed()

    # ------------------------------------------------------------------ User Control Point

    def _on_ucp(self, connection: Connection, value: bytes) -> None:
        if connection is not self._connection or not self.is_subscribed(self.ucp_char, indicate=True):
            raise att.ATT_Error(ATT_CCCD_IMPROPERLY_CONFIGURED)
        if self._responding:
            raise att.ATT_Error(ATT_PROCEDURE_ALREADY_IN_PROGRESS)
        try:
            request = decode_request(bytes(value))
        except UdsError as exc:
            if exc.op_code is None or exc.op_code == UcpOpCode.RESPONSE:
                raise att.ATT_Error(ATT_INVALID_ATTRIBUTE_VALUE_LENGTH) from exc
            response = UcpResponse(exc.op_code, exc.problem.response_value())
        else:
            response = self._answer(connection, request)
        self._responding = True
        self.spawn(self._respond(response), name=f"{self.id}-ucp")

    def _answer(self, connection: Connection, request: UcpRequest) -> UcpResponse:
        if isinstance(request, RegisterNewUser):
            free = [index for index in range(self.max_users) if index not in self.users]
            if not free:
                return UcpResponse.answering(request, UcpResult.OPERATION_FAILED)
            self.users[free[0]] = request.consent_code
            self.increments[free[0]] = 0
            return UcpResponse.answering(request, UcpResult.SUCCESS, free[0])
        if isinstance(request, Consent):
            if request.user_index not in self.users:
                return UcpResponse.answering(request, UcpResult.INVALID_PARAMETER)
            if self.users[request.user_index] != request.consent_code:
                return UcpResponse.answering(request, UcpResult.USER_NOT_AUTHORIZED)
            self._consent = (connection, request.user_index)
            self._kick.set()
            return UcpResponse.answering(request, UcpResult.SUCCESS)
        return self._delete_user_data(request)

    def _delete_user_data(self, request: DeleteUserData) -> UcpResponse:
        user = self.consented_user
        if user is None:
            return UcpResponse.answering(request, UcpResult.USER_NOT_AUTHORIZED)
        del self.users[user]
        self.increments.pop(user, None)
        self._memory.pop(user, None)
        self._consent = None
        return UcpResponse.answering(request, UcpResult.SUCCESS)

    async def _respond(self, response: UcpResponse) -> None:
        # The procedure ends as its response leaves: the client may write the next request as soon as it has it.
        self._responding = False
        if await self.indicate(self.ucp_char, bytes(response)):
            self.answers.append(response)
        self._notify_changed()

    # ------------------------------------------------------------------ user data

    def _read_increment(self, connection: Connection) -> bytes:
        user = self.consented_user
        if user is None or connection is not self._connection:
            raise att.ATT_Error(ATT_USER_DATA_ACCESS_NOT_PERMITTED)
        return bytes(DatabaseChangeIncrement(self.increments.get(user, 0)))

    def _write_increment(self, connection: Connection, value: bytes) -> None:
        user = self.consented_user
        if user is None or connection is not self._connection:
            raise att.ATT_Error(ATT_USER_DATA_ACCESS_NOT_PERMITTED)
        try:
            self.increments[user] = DatabaseChangeIncrement.from_bytes(value).value
        except UdsError as exc:
            raise att.ATT_Error(ATT_INVALID_ATTRIBUTE_VALUE_LENGTH) from exc

    def _read_index(self, _connection: Connection) -> bytes:
        user = self.consented_user
        return bytes(UserIndex(UNKNOWN_USER if user is None else user))
