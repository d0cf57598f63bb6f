"""A multi-user scale's User Data Service consent, checked while the installer pairs it (issue 14 item 6).

A family scale sends a registered user's weights only to a client that gives that user's consent code on the
connection (``protocols.gatt.uds``; the hub's sessions give it in ``gateway.ble_steps``). The installer provisions
the scale with the resident's user index (``--user``, the number the scale shows for that person) and the consent
code chosen when that user was registered on the scale (``--consent-code``, 0..9999). Both are checked before the
radio is used (:func:`consent_to_check`), and the code is tried on the scale while it is paired
(:func:`check_consent`): a scale that refuses it fails the pairing with one line, and nothing is saved, so a wrong
code is found at installation rather than as a scale that never delivers the resident's weights.
"""

from __future__ import annotations

from bleak import BleakClient

from gateway.ble_steps import ask_user_control_point
from gateway.ble_types import uuid16
from gateway.provision.errors import ProvisionError
from protocols.errors import DecodeError
from protocols.gatt import uds

__all__ = ["ConsentRefusedError", "check_consent", "consent_to_check"]


class ConsentRefusedError(ProvisionError):
    """The scale refused the consent code for the user index (or has no User Data Service).

    Attributes:
        result: the scale's answer, None when it gave none that decodes (or has no User Control Point).
    """

    def __init__(self, what: str, fix: str, result: uds.UcpResult | None = None) -> None:
        self.result = result
        super().__init__(what, fix)


def consent_to_check(user: int | None, consent_code: int | None) -> uds.Consent | None:
    """The Consent the installer's ``--user`` and ``--consent-code`` make (None without a code).

    Raises:
        ProvisionError: a code without a user, a code outside 0..9999, or user 255 (nobody in particular).
    """
    if consent_code is None:
        return None
    if user is None:
        raise ProvisionError(
            "a consent code belongs to one user of the scale", "give the resident's user number too: --user N"
        )
    if isinstance(consent_code, bool) or not 0 <= consent_code <= uds.CONSENT_CODE_MAX:
        raise ProvisionError(
            f"consent code {consent_code!r} is not 0 to {uds.CONSENT_CODE_MAX}",
            "give the code chosen when this user was registered on the scale",
        )
    if user == uds.UNKNOWN_USER:
        raise ProvisionError("user 255 is the scale's unknown user", "give the number the scale shows for the resident")
    return uds.Consent(user, consent_code)


async def check_consent(client: BleakClient, address: str, consent: uds.Consent) -> None:
    """Give `consent` on the connected, paired scale and require the scale to accept it.

    Raises:
        ConsentRefusedError: no User Data Service, or the scale answered anything but success (a wrong code is
            "user not authorized", a user it does not have "invalid parameter").
        BleakError: the link failed (the caller's to report).
    """
    if client.services.get_characteristic(uuid16(uds.USER_CONTROL_POINT)) is None:
        raise ConsentRefusedError(
            f"{address} has no User Data Service to give consent to", "pair it again without --consent-code"
        )
    raw = await ask_user_control_point(client, consent)
    try:
        answer = uds.decode_response(raw)
    except DecodeError as exc:
        raise ConsentRefusedError(
            f"{address} answered the consent with bytes that do not decode ({exc})",
            "try again; if it persists, pair it without --consent-code and report the scale's model",
        ) from exc
    if answer.request_op_code == uds.UcpOpCode.CONSENT and answer.result is uds.UcpResult.SUCCESS:
        return
    what = answer.result.name.lower().replace("_", " ")
    if answer.result is uds.UcpResult.USER_NOT_AUTHORIZED:
        fix = f"give the consent code registered on the scale for user {consent.user_index}"
    elif answer.result is uds.UcpResult.INVALID_PARAMETER:
        fix = "give the user number the scale shows for the resident (register the resident on the scale first)"
    else:
        fix = "try again with the scale awake; if it persists, pair it without --consent-code"
    raise ConsentRefusedError(
        f"{address} refused the consent code for user {consent.user_index} ({what})",
        f"{fix}, and pair again; nothing was saved",
        answer.result,
    )
