# HMAC-SHA256 against the RFC 4231 test vectors (the same vectors are checked against CPython's hmac in pytest).
from hmac_sha256 import equal, hmac_sha256
from support import equal as eq

_LONG_KEY = b"\xaa" * 131
VECTORS = (
    (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (
        _LONG_KEY,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
    (
        _LONG_KEY,
        b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be"
        b" hashed before being used by the HMAC algorithm.",
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    ),
)


def test_rfc4231_vectors():
    for i, (key, msg, want) in enumerate(VECTORS):
        got = hmac_sha256(key, msg).hex()[: len(want)]
        eq(got, want, "RFC 4231 case %d" % (i + 1))


def test_parts_equal_concatenation():
    key = b"k" * 64  # exactly one block: neither hashed nor padded
    eq(hmac_sha256(key, b"ab", b"", b"cd"), hmac_sha256(key, b"abcd"), "parts")


def test_equal():
    eq(equal(b"abc", b"abc"), True, "same")
    eq(equal(b"abc", b"abd"), False, "last byte")
    eq(equal(b"abc", b"ab"), False, "length")
