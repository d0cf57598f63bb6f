"""Every decoder a radio or the network can reach, as a fuzz target, with its documented errors and its seeds.

A :class:`Target` turns untrusted bytes into a call of one public entry point of :mod:`protocols`. The contract
(issue 19 item 2): for *any* bytes, the call returns or raises one of the target's documented errors, all from the
:mod:`protocols.errors` tree; anything else (``ValueError``, ``OverflowError``, ``RecursionError``, ...) is a defect.

Some targets reach past a signature or a seal by signing/sealing the fuzzed bytes with the fixed example keys of
``docs/protocol.md`` §2 (``*.signed``, ``envelope.inner``): that is what a holder of a hub's credentials, or of the
platform's public key, can send, and what issue 19 found ingest dying on.

Seeds come from the test vectors: every hex vector in ``docs/protocol.md``, every hex literal in
``tests/protocols/*.py``, the known-bad corpus in ``tests/fuzz/corpus/`` and valid values built with the codecs.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nacl.public
import nacl.signing

from protocols import cbor, gatt
from protocols.acks import ACK_DOMAIN, Ack, Rejected, sign_ack, verify_ack
from protocols.envelope import ENVELOPE_DOMAIN, open_envelope, seal
from protocols.errors import (
    AuthenticationError,
    DecodeError,
    EnvelopeError,
    EnvelopeRejection,
    ProtocolError,
)
from protocols.keys import HubIdentity, sign_detached
from protocols.messages import (
    DOWN_DOMAIN,
    AlarmAcknowledgement,
    AlarmSnooze,
    DownMessage,
    ThresholdUpdate,
    sign_message,
    verify_message,
)
from protocols.pendant import (
    ConfirmFrame,
    DeviceInfo,
    FeedbackFrame,
    PendantEvent,
    PendantVerifier,
    compute_tag,
)
from protocols.record import (
    AlarmBody,
    AlarmState,
    AlarmTier,
    DeviceStatusBody,
    EvictionBody,
    LinkState,
    PanicBody,
    PanicEventType,
    Record,
    decode_record,
    peek_record_hub,
)
from protocols.topics import decode_uplink, encode_uplink, parse_topic

ROOT: Final = Path(__file__).resolve().parents[2]
CORPUS_DIR: Final = Path(__file__).resolve().parent / "corpus"

# The example keys of docs/protocol.md §2 and §9.5, so the documented vectors verify.
HUB_ID: Final = "home-0042"
HUB: Final = HubIdentity(HUB_ID, nacl.signing.SigningKey(b"\x11" * 32))
PLATFORM_SIGNING: Final = nacl.signing.SigningKey(b"\x22" * 32)
PLATFORM_BOX: Final = nacl.public.PrivateKey(b"\x33" * 32)
KNOWN_HUBS: Final = {HUB_ID: HUB.verify_key}
PENDANT_ID: Final = "pendant-0001"
PENDANT_KEY: Final = bytes(range(32))
LAST_DOWN_SEQ: Final = 2
"""The down-message high-water mark the ``down*`` targets check against (the documented example has seq 3)."""
T0: Final = dt.datetime(2026, 3, 14, 9, 26, 53, 589793, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Target:
    """One fuzz target.

    Attributes:
        name: short, stable name (``"gatt.2A35"``); the fuzzer's ``--targets`` selects by it.
        call: feeds the untrusted bytes to the entry point; its result is ignored.
        documented: the errors the entry point documents; anything else escaping is a defect.
        cbor_body: the bytes are (mostly) a CBOR message, so structured adversarial CBOR is worth generating.
    """

    name: str
    call: Callable[[bytes], object]
    documented: tuple[type[ProtocolError], ...]
    cbor_body: bool


def _sealed(plaintext: bytes) -> bytes:
    return bytes(nacl.public.SealedBox(PLATFORM_BOX.public_key).encrypt(plaintext))


def _open(data: bytes) -> object:
    return open_envelope(data, PLATFORM_BOX, KNOWN_HUBS, expected_hub=HUB_ID)


def _open_inner(plaintext: bytes) -> object:
    """The bytes are ``signature || inner``: what anyone holding the platform's public key can seal."""
    return _open(_sealed(plaintext))


def _open_signed(inner: bytes) -> object:
    """The bytes are the inner CBOR, signed by the enrolled hub: reaches every record decoder."""
    return _open(_sealed(sign_detached(HUB.signing_key, ENVELOPE_DOMAIN, inner) + inner))


def _ack(data: bytes) -> object:
    return verify_ack(data, PLATFORM_SIGNING.verify_key, HUB_ID)


def _ack_signed(body: bytes) -> object:
    return _ack(sign_detached(PLATFORM_SIGNING, ACK_DOMAIN, body) + body)


def _down(data: bytes) -> object:
    return verify_message(data, PLATFORM_SIGNING.verify_key, HUB_ID, LAST_DOWN_SEQ)


def _down_signed(body: bytes) -> object:
    return _down(sign_detached(PLATFORM_SIGNING, DOWN_DOMAIN, body) + body)


def _topic(data: bytes) -> object:
    return parse_topic(data.decode("utf-8", "replace"))  # MQTT topics arrive as UTF-8 text


def _pendant_verify(frame: bytes) -> object:
    return PendantVerifier(PENDANT_ID, PENDANT_KEY, last_counter=41).verify(frame)


def _pendant_verify_signed(header: bytes) -> object:
    """The bytes are an Event frame without its tag; the right tag is added, so counter rules are reached."""
    return _pendant_verify(header + compute_tag(PENDANT_KEY, b"E", PENDANT_ID, header))


def _confirm(data: bytes) -> object:
    ConfirmFrame.from_bytes(data).verify(PENDANT_ID, PENDANT_KEY)
    return None


def _confirm_signed(header: bytes) -> object:
    return _confirm(header + compute_tag(PENDANT_KEY, b"C", PENDANT_ID, header))


def _feedback(data: bytes) -> object:
    FeedbackFrame.from_bytes(data).verify(PENDANT_ID, PENDANT_KEY)
    return None


def _feedback_signed(header: bytes) -> object:
    return _feedback(header + compute_tag(PENDANT_KEY, b"F", PENDANT_ID, header))


def _gatt(uuid: int) -> Callable[[bytes], object]:
    return functools.partial(gatt.decode, uuid)


_DECODE = (DecodeError,)
_SIGNED = (AuthenticationError, DecodeError)  # ReplayError is an AuthenticationError
_ENVELOPE = (EnvelopeError,)

TARGETS: Final[tuple[Target, ...]] = (
    Target("cbor", cbor.loads, _DECODE, cbor_body=True),
    Target("topic", _topic, _DECODE, cbor_body=False),
    Target("uplink", decode_uplink, _DECODE, cbor_body=True),
    Target("record", decode_record, _DECODE, cbor_body=True),
    Target("record.hub", peek_record_hub, _DECODE, cbor_body=True),
    Target("envelope", _open, _ENVELOPE, cbor_body=False),
    Target("envelope.inner", _open_inner, _ENVELOPE, cbor_body=False),
    Target("envelope.signed", _open_signed, _ENVELOPE, cbor_body=True),
    Target("ack", _ack, _SIGNED, cbor_body=False),
    Target("ack.signed", _ack_signed, _SIGNED, cbor_body=True),
    Target("down", _down, _SIGNED, cbor_body=False),
    Target("down.signed", _down_signed, _SIGNED, cbor_body=True),
    *(Target(f"gatt.{uuid:04X}", _gatt(uuid), _DECODE, cbor_body=False) for uuid in sorted(gatt.DECODERS)),
    Target("pendant.event", PendantEvent.from_bytes, _DECODE, cbor_body=False),
    Target("pendant.verify", _pendant_verify, _SIGNED, cbor_body=False),
    Target("pendant.verify.signed", _pendant_verify_signed, _SIGNED, cbor_body=False),
    Target("pendant.confirm", _confirm, _SIGNED, cbor_body=False),
    Target("pendant.confirm.signed", _confirm_signed, _SIGNED, cbor_body=False),
    Target("pendant.feedback", _feedback, _SIGNED, cbor_body=False),
    Target("pendant.feedback.signed", _feedback_signed, _SIGNED, cbor_body=False),
    Target("pendant.device_info", DeviceInfo.from_bytes, _DECODE, cbor_body=False),
)
TARGETS_BY_NAME: Final = {target.name: target for target in TARGETS}


# --- seeds ----------------------------------------------------------------------------------------------------------

_DOC_HEX: Final = re.compile(r"`([0-9a-f]{8,})`|```\n([0-9a-f\n]+)\n```")
_TEST_HEX: Final = re.compile(r"""(?:fromhex|hx)\(\s*["']([0-9A-Fa-f ]{2,})["']""")


def _doc_vectors() -> Iterator[bytes]:
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    for inline, block in _DOC_HEX.findall(text):
        digits = (inline or block).replace("\n", "")
        if len(digits) % 2 == 0:
            yield bytes.fromhex(digits)


def _test_vectors() -> Iterator[bytes]:
    for path in sorted((ROOT / "tests" / "protocols").glob("*.py")):
        for literal in _TEST_HEX.findall(path.read_text(encoding="utf-8")):
            digits = literal.replace(" ", "")
            if len(digits) % 2 == 0:
                yield bytes.fromhex(digits)


def read_corpus_file(path: Path) -> bytes:
    """One corpus entry: hex digits (whitespace ignored) after optional ``#`` comment lines."""
    lines = path.read_text(encoding="ascii").splitlines()
    return bytes.fromhex("".join(line for line in lines if not line.lstrip().startswith("#")))


def corpus() -> dict[str, bytes]:
    """The known-bad inputs kept in ``tests/fuzz/corpus/*.hex``, by file stem."""
    return {path.stem: read_corpus_file(path) for path in sorted(CORPUS_DIR.glob("*.hex"))}


def _records() -> list[bytes]:
    """The §3 example measurement record and one record of each other kind."""
    alarm = AlarmBody(
        "alarm-7", "bp.systolic.critical", AlarmTier.CRITICAL, AlarmState.RAISED, 0, "Blood pressure very high",
        trigger_record_ids=(bytes(16),), value=182, threshold=180, resident_id="resident-1",
    )  # fmt: skip
    panic = PanicBody(PENDANT_ID, PanicEventType.PRESS, 42, battery=87, alarm_id="alarm-8")
    status = DeviceStatusBody(battery=50, link=LinkState.CONNECTED)
    eviction = EvictionBody(3, 1, 3, 900, oldest_record_id=bytes(16), newest_record_id=bytes(16))
    made = [
        Record(bytes(range(16)), HUB_ID, 100, T0, alarm).to_cbor(),
        Record(bytes(range(16)), HUB_ID, 101, T0, panic, device_id=PENDANT_ID).to_cbor(),
        Record(bytes(range(16)), HUB_ID, 102, T0, status, device_id="bp-cuff-1").to_cbor(),
        Record(bytes(range(16)), HUB_ID, 103, T0, eviction).to_cbor(),
    ]
    return [v for v in _doc_vectors() if len(v) > 200 and v[:1] == b"\xa9"] + made


def _built_values() -> Iterator[bytes]:
    """Valid messages of every network format, made with the codecs (and their bodies without signatures)."""
    records: list[cbor.CborValue] = list(_records())
    yield from _records()
    envelope = seal(HUB, PLATFORM_BOX.public_key, 41, T0, _records())
    yield envelope
    yield encode_uplink([envelope, envelope])
    yield cbor.dumps({"v": 1, "hub": HUB_ID, "seq": 41, "sealed_at": cbor.to_micros(T0), "records": records})
    ack = Ack(HUB_ID, 7, T0, stored=(41, 42, cbor.MAX_UINT), rejected=(Rejected(40, EnvelopeRejection.CANNOT_OPEN),))
    yield sign_ack(ack, PLATFORM_SIGNING)
    bodies: tuple[ThresholdUpdate | AlarmAcknowledgement | AlarmSnooze, ...] = (
        ThresholdUpdate("resident-1", {"bp.systolic.critical": 180, "spo2.low": 91.5, "hr.high": None}),
        AlarmAcknowledgement("alarm-7", by="Mei Lin", at=T0, role="daughter", note="on my way"),
        AlarmSnooze("alarm-7", by="Mei Lin", duration_seconds=600, at=T0),
    )
    for seq, body in enumerate(bodies, LAST_DOWN_SEQ + 1):
        yield sign_message(DownMessage(HUB_ID, seq, T0, body), PLATFORM_SIGNING)
    for topic in ("carehub/v1/home-0042/up", "carehub/v1/home-0042/ack", "carehub/v1/home-0042/down"):
        yield topic.encode()
    yield bytes(DeviceInfo(PENDANT_ID))


@functools.cache
def seeds() -> tuple[bytes, ...]:
    """Every seed, deduplicated, in a stable order; signed targets also get each seed without a signature."""
    found: dict[bytes, None] = {}
    for value in (*_doc_vectors(), *_test_vectors(), *corpus().values(), *_built_values()):
        found[value] = None
        if len(value) > 64:
            found[value[64:]] = None  # a signed message's body, the input of the *.signed targets
        if len(value) > 16:
            found[value[:-16]] = None  # a pendant frame without its tag, the input of pendant.*.signed
    return tuple(found)


def gatt_strategies_path() -> Path:
    """Where the valid-value strategies of every characteristic live (``tests/protocols/strategies.py``)."""
    return ROOT / "tests" / "protocols"


def ensure_strategies_importable() -> None:
    """Make ``tests/protocols`` importable as pytest's rootdir-relative layout does."""
    path = str(gatt_strategies_path())
    if path not in sys.path:
        sys.path.insert(0, path)
