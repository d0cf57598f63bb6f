"""Sans-I/O core of carehub: GATT health-profile codecs, reading records, envelopes, topics and acks.

Only the standard library, cbor2 and PyNaCl are imported here; no asyncio, no sockets.
"""
