"""Hostile inputs for the fuzz targets: structured adversarial CBOR (hypothesis strategies) and fast byte mutations.

The strategies write CBOR by hand (:func:`head`), so they can say what no well-behaved encoder says: bignum tags of
thousands of bytes, integers at and beyond the 64-bit limits, non-shortest heads, indefinite lengths, declared
lengths of 2**64 - 1, reserved additional-information values, stray breaks, every tag, NaN and infinities in every
width, duplicate and non-text map keys, nesting far past the decoder's limit. :func:`templated` puts such an item
at one place inside a *valid* message (a record, an ack body, an envelope's inner map), so the checks behind the
CBOR layer are reached too: an ack whose ``stored`` holds ``2**63``, a down-message whose ``seq`` is ``2**64 - 1``.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from typing import Final

import cbor2
from hypothesis import strategies as st

from protocols import cbor
from protocols.errors import DecodeError

INTERESTING_UINTS: Final = (
    0, 1, 23, 24, 255, 256, 65_535, 65_536, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1,
)  # fmt: skip
"""Unsigned values at every CBOR head width's edge and at the signed/unsigned 64-bit limits."""
_TAGS: Final = (0, 1, 2, 3, 4, 5, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004,
                43000, 55799, 2**32 - 1, 2**64 - 1)  # fmt: skip
_WIDTHS: Final = {None: 0, 24: 1, 25: 2, 26: 4, 27: 8}
_FLOATS: Final = tuple(
    bytes.fromhex(h)
    for h in (
        "f97e00", "f97c00", "f9fc00", "f98000", "f90001", "f97bff",  # half: NaN, +inf, -inf, -0, subnormal, max
        "fa7fc00000", "fa7f800000", "faff800000", "fa7fc00001",  # single: NaN, +inf, -inf, NaN with payload
        "fb7ff8000000000000", "fb7ff0000000000000", "fb7fefffffffffffff", "fb0000000000000001",  # double
        "fb3ff8000000000000",  # 1.5 in 64 bits: not the shortest form
    )
)  # fmt: skip
_SIMPLE: Final = tuple(bytes.fromhex(h) for h in ("f4", "f5", "f6", "f7", "f800", "f818", "f8ff", "e0", "f0", "ff"))
_RESERVED: Final = tuple(bytes([major << 5 | info]) for major in range(8) for info in (28, 29, 30))
_KEYS: Final = ("v", "hub", "seq", "id", "kind", "body", "records", "stored", "rejected", "at", "type", "values")


def head(major: int, value: int, ai: int | None = None) -> bytes:
    """A CBOR head: major type and argument, shortest unless ``ai`` (24..27) forces a wider form."""
    if ai is None:
        if value < 24:
            return bytes([major << 5 | value])
        ai = 24 if value < 2**8 else 25 if value < 2**16 else 26 if value < 2**32 else 27
    size: int = _WIDTHS[ai]
    return bytes([major << 5 | ai]) + (value % (1 << (8 * size))).to_bytes(size, "big")


@st.composite
def _uint_items(draw: st.DrawFn) -> bytes:
    value = draw(st.one_of(st.sampled_from(INTERESTING_UINTS), st.integers(0, 2**64 - 1)))
    major = draw(st.sampled_from((0, 1)))  # 1: the negative integer -1 - value, down to -2**64
    widths = [ai for ai, size in _WIDTHS.items() if ai is not None and value < 2 ** (8 * size)]
    ai = draw(st.sampled_from([None, *widths])) if widths else None
    return head(major, value, ai)


@st.composite
def _bignum_items(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from((0, 1, 8, 9, 16, 64, 512, 1792, 4096, 20_000)))
    fill = draw(st.sampled_from((b"\xff", b"\x00", b"\x80", b"\x01")))
    return head(6, draw(st.sampled_from((2, 3)))) + head(2, size) + fill * size


@st.composite
def _huge_length_items(draw: st.DrawFn) -> bytes:
    major = draw(st.sampled_from((2, 3, 4, 5)))
    length = draw(st.sampled_from((2**31, 2**32 - 1, 2**63, 2**64 - 1, 1_000_000)))
    return head(major, length) + draw(st.binary(max_size=16))


def _text_item(text: str) -> bytes:
    raw = text.encode("utf-8")
    return head(3, len(raw)) + raw


_LEAVES: Final = st.one_of(
    _uint_items(),
    _bignum_items(),
    _huge_length_items(),
    st.sampled_from(_FLOATS + _SIMPLE + _RESERVED),
    st.floats().map(lambda x: bytes(cbor2.dumps(x, canonical=True))),
    st.text(max_size=24).map(_text_item),
    st.binary(max_size=24).map(lambda b: head(3, len(b)) + b),  # a text string that may not be UTF-8
    st.binary(max_size=24).map(lambda b: head(2, len(b)) + b),
    st.sampled_from(_KEYS).map(_text_item),
)


@st.composite
def _array(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    items = draw(st.lists(children, max_size=5))
    declared = len(items) + draw(st.sampled_from((0, 0, 0, 1, -1))) if items else len(items)
    return head(4, declared) + b"".join(items)


@st.composite
def _map(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    keys = st.one_of(st.sampled_from(_KEYS).map(_text_item), children)  # duplicates and non-text keys are likely
    pairs = draw(st.lists(st.tuples(keys, children), max_size=5))
    if draw(st.booleans()):
        pairs.sort()  # sometimes bytewise-sorted keys, as the deterministic encoding has them
    return head(5, len(pairs)) + b"".join(k + v for k, v in pairs)


@st.composite
def _indefinite(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    start = draw(st.sampled_from((b"\x5f", b"\x7f", b"\x9f", b"\xbf")))
    return start + b"".join(draw(st.lists(children, max_size=4))) + draw(st.sampled_from((b"\xff", b"")))


@st.composite
def _tagged(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    tag = draw(st.one_of(st.sampled_from(_TAGS), st.integers(0, 2**64 - 1)))
    return head(6, tag) + draw(children)


@st.composite
def _deep(draw: st.DrawFn, children: st.SearchStrategy[bytes]) -> bytes:
    levels = draw(st.sampled_from((cbor.MAX_DEPTH - 1, cbor.MAX_DEPTH, cbor.MAX_DEPTH + 1, 100, 10_000, 200_000)))
    opener = draw(st.sampled_from((b"\x81", b"\xa1\x61v", b"\x9f", b"\xc2")))
    return opener * levels + draw(children)


def _extend(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(_array(children), _map(children), _indefinite(children), _tagged(children), _deep(children))


def cbor_items() -> st.SearchStrategy[bytes]:
    """One hostile CBOR data item (possibly not well-formed), as bytes."""
    return st.recursive(_LEAVES, _extend, max_leaves=12)


def _encode_with(value: cbor.CborValue, path: Sequence[str | int], raw: bytes) -> bytes:
    """The deterministic encoding of ``value`` with the item at ``path`` replaced by the bytes ``raw``."""
    if not path:
        return raw
    step, rest = path[0], path[1:]
    if isinstance(value, list) and isinstance(step, int):
        return head(4, len(value)) + b"".join(
            _encode_with(item, rest, raw) if index == step else bytes(cbor2.dumps(item, canonical=True))
            for index, item in enumerate(value)
        )
    if isinstance(value, dict) and isinstance(step, str):
        keyed = sorted((bytes(cbor2.dumps(key)), key) for key in value)
        return head(5, len(value)) + b"".join(
            encoded
            + (_encode_with(value[key], rest, raw) if key == step else bytes(cbor2.dumps(value[key], canonical=True)))
            for encoded, key in keyed
        )
    return bytes(cbor2.dumps(value, canonical=True))


def _paths(value: cbor.CborValue, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    found = [prefix]
    if isinstance(value, list):
        for index, item in enumerate(value[:8]):
            found += _paths(item, (*prefix, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    return found


def _at(value: cbor.CborValue, path: Sequence[str | int]) -> cbor.CborValue:
    for step in path:
        value = value[step]  # type: ignore[index]  # the path was taken from this value
    return value


_EDGE_LENGTHS: Final = (0, 1, 2, 15, 16, 17, 62, 63, 64, 65, 255, 256, 257, 512, 513, 2048, 8193)


def _same_kind(value: cbor.CborValue) -> st.SearchStrategy[cbor.CborValue]:
    """Values of the kind ``value`` is, at the edges of what a field of that kind might allow."""
    if isinstance(value, bool) or value is None:
        return st.sampled_from((None, True, False, 0, ""))
    if isinstance(value, int):
        return st.one_of(st.sampled_from(INTERESTING_UINTS), st.integers(-(2**64), 2**64 - 1))
    if isinstance(value, float):
        return st.floats()
    if isinstance(value, str):
        return st.sampled_from(_EDGE_LENGTHS).flatmap(
            lambda n: st.sampled_from(("a" * n, "A-" * (n // 2), "\u00e9" * n))
        )
    if isinstance(value, bytes):
        return st.sampled_from(_EDGE_LENGTHS).map(lambda n: b"\x00" * n)
    if isinstance(value, list):
        return st.sampled_from(([], value * 2, value[:-1], [value[0]] * 129 if value else [0]))
    return st.sampled_from(({}, None))


def templated(templates: Sequence[cbor.CborValue]) -> st.SearchStrategy[bytes]:
    """A valid message from ``templates`` with one item (a field, a list element, a whole map) replaced: by a hostile
    item, or by a well-formed value of its own kind at the edge of its range (which the decoder may accept, so the
    fuzzer keeps it and mutates further from there)."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        template = draw(st.sampled_from(templates))
        path = draw(st.sampled_from(_paths(template)))
        if draw(st.booleans()) and path:
            replacement = bytes(cbor2.dumps(draw(_same_kind(_at(template, path))), canonical=True))
        else:
            replacement = draw(cbor_items())
        return _encode_with(template, path, replacement)

    return build()


def cbor_templates(seeds: Sequence[bytes]) -> list[cbor.CborValue]:
    """The seeds that are valid carehub CBOR maps (message bodies to build :func:`templated` inputs from)."""
    found: list[cbor.CborValue] = []
    for seed in seeds:
        try:
            value = cbor.loads(seed)
        except DecodeError:
            continue
        if isinstance(value, dict) and value:
            found.append(value)
    return found


# --- fast mutations -------------------------------------------------------------------------------------------------

MAX_INPUT: Final = 300_000
"""No network frame the decoders accept is longer than an uplink frame (262,144 bytes)."""
_INTERESTING_BYTES: Final = (0x00, 0x01, 0x17, 0x18, 0x1B, 0x3B, 0x5B, 0x7B, 0x7F, 0x80, 0x9B, 0x9F, 0xBB, 0xBF,
                             0xC2, 0xD8, 0xF9, 0xFB, 0xFF)  # fmt: skip
_INTERESTING_CHUNKS: Final = (
    head(0, 2**64 - 1), head(0, 2**63), head(0, 2**63 - 1), head(1, 2**64 - 1), head(1, 2**63), head(0, 2**32),
    b"\xc2\x59\x07\x00" + b"\xff" * 1792, b"\xc3\x49\x01" + bytes(8), b"\x81" * 40, b"\x9f\xff", b"\x5b" + b"\xff" * 8,
    b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xf9\x7c\x00", b"\xff\xff\xff\xff", struct.pack("<I", 2**32 - 1),
)  # fmt: skip


def mutate(rng: random.Random, data: bytes, pool: Sequence[bytes]) -> bytes:
    """One to four random edits of ``data``, libFuzzer style, with CBOR-aware chunks; at most :data:`MAX_INPUT`."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[min(at, len(out) - 1)] = rng.choice(_INTERESTING_BYTES)
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and out:
            del out[at : at + rng.randint(1, 16)]
        elif op == 4 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 64)]
        elif op == 5:
            del out[at:]
        elif op == 6 and pool:
            other = rng.choice(pool)
            start = rng.randrange(len(other) + 1)
            out[at:] = other[start:]
        elif op == 7:
            chunk = rng.choice(_INTERESTING_CHUNKS)
            out[at : at + (len(chunk) if rng.random() < 0.5 else 0)] = chunk
        elif op == 8 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 9:
            out[at:at] = rng.choice(_INTERESTING_CHUNKS)[: rng.randint(1, 12)]
    return bytes(out[:MAX_INPUT])
