"""The process runtime every carehub program shares: the event loop (uvloop), guards for asyncio cancellations that
libraries lose, and standard output that is written completely or fails loudly.

It sits beside ``protocols/`` (which stays sans-I/O: no asyncio, no event loop, no streams) so that the hub
(``gateway``), the community platform (``community``) and the command lines (``carehub``, ``sim``) use one copy of
these without depending on each other. It imports only the standard library and uvloop.
"""
