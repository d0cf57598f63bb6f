"""The panic pendant: carehub's own service (docs/protocol.md section 9). Its frames are not SIG measurements: the
BLE session and ``gateway.core.pendant_link`` handle them; the profile carries what the other kinds share."""

from __future__ import annotations

from datetime import timedelta

from protocols.devices import DeviceKind
from protocols.pendant import SERVICE_UUID
from protocols.profiles.base import DeviceProfile

# firmware/pendant/app.py: a provisioned pendant stays awake and connectable for a minute (AWAKE_MS) after it boots or
# after its last gesture; a double press is a check-in (button.DOUBLE), never a call for help. Its LED is
# single-colour and shows nothing while it waits (firmware/README.md, "LED and buzzer patterns").
PROFILE = DeviceProfile(
    kind=DeviceKind.PENDANT,
    label="Panic pendant",
    service=SERVICE_UUID,
    service_in_advert=True,
    channels=(),
    needs_bond=True,
    instructions="Wake the pendant without calling for help: right after its key was loaded (mpremote reset) "
    "it is reachable for a minute; later, double-press its button (a check-in). Its light stays off while it waits.",
    test_prompt="Press the pendant's button once (a test: it is recorded as such, no call for help is made).",
    silent_after=timedelta(hours=12),  # the pendant sends a heartbeat every few hours
    sim_peripheral="sim.devices.pendant:Pendant",
)
