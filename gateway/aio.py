"""The hub's asyncio helpers: the uvloop runner and the cancellation guards, defined in :mod:`runtime.aio`.

They moved there so the community platform (:mod:`community`), which must not import the hub, runs on the same
loop with the same guards; the hub's modules keep importing them from here.
"""

from __future__ import annotations

from runtime.aio import keep_cancellation, new_event_loop, raise_if_cancelling, run

__all__ = ["keep_cancellation", "new_event_loop", "raise_if_cancelling", "run"]
