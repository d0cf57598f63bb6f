# HMAC-SHA256 (RFC 2104) over MicroPython's hashlib.sha256, which has no copy() and no hmac module beside it.
#
# Tested against CPython's hmac with the RFC 4231 vectors (firmware/tests/test_hmac.py and
# tests/firmware/test_firmware.py).

import hashlib

from micropython import const

_BLOCK = const(64)  # SHA-256 block size in bytes
_IPAD = const(0x36)
_OPAD = const(0x5C)


def hmac_sha256(key: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256(key, parts[0] || parts[1] || ...), 32 bytes.

    The message is given in parts so callers need not concatenate (one allocation fewer per part).
    """
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = bytearray(_BLOCK)
    padded[: len(key)] = key
    for i in range(_BLOCK):
        padded[i] ^= _IPAD
    inner = hashlib.sha256(padded)
    for part in parts:
        inner.update(part)
    for i in range(_BLOCK):
        padded[i] ^= _IPAD ^ _OPAD
    outer = hashlib.sha256(padded)
    outer.update(inner.digest())
    mac: bytes = outer.digest()
    return mac


def equal(a: bytes, b: bytes) -> bool:
    """Compare two tags in time that depends only on their lengths (no early exit on the first difference)."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
