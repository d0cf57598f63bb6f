"""The hub's reconnect and retry delays, defined in :mod:`protocols.backoff`.

The pure backoff function moved there so the community platform's reconnects (:mod:`community.ingest`) use the same
one without importing the hub; the hub's modules keep importing it from here.
"""

from __future__ import annotations

from protocols.backoff import RetryPolicy, backoff_delay

__all__ = ["RetryPolicy", "backoff_delay"]
