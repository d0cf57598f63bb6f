"""Bond keys in a JSON file that a power cut cannot tear: bumble's key store, saved with the one atomic-write helper.

bumble's :class:`~bumble.keys.JsonKeyStore` replaces its file with ``os.replace`` but syncs nothing: after a power
cut the file may be empty or cut short (its bytes were still in the page cache when the rename reached the disk), and
``json.load`` then fails at the next start, losing every bond. :class:`DurableJsonKeyStore` keeps bumble's format and
loading, and saves through :func:`protocols.atomic.write_atomic` (temp file, fsync, rename, directory fsync), so the
file is always the previous complete set of bonds or the new one. ``tests/powerloss`` checks it at every crash point.
"""

from __future__ import annotations

import json
from typing import Any

from bumble.keys import JsonKeyStore

from protocols import atomic

__all__ = ["DurableJsonKeyStore"]


class DurableJsonKeyStore(JsonKeyStore):
    """bumble's JSON bond store, written atomically and durably (mode 0600: the file holds long-term keys)."""

    async def save(self, db: dict[str, dict[str, dict[str, Any]]]) -> None:
        """Replace the file with ``db`` (bumble's layout: sorted keys, indented)."""
        text = json.dumps(db, sort_keys=True, indent=4)
        atomic.write_atomic(self.filename, text.encode("utf-8"), mode=0o600, parents=True)
