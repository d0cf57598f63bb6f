"""The installer's last resort when the platform cannot be reached: a command and/or a webhook (I/O).

The panic lifecycle (`gateway.panic`) asks for it when a call for help is not acknowledged in time, and the hub
(`gateway.hub`) when a press could not be stored; :class:`FallbackNotifier` carries it out off the event loop and
never raises into alarm handling: a failure is logged and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import urllib.request
from collections.abc import Sequence

__all__ = ["FallbackNotifier"]

_log = logging.getLogger(__name__)


class FallbackNotifier:
    """The installer's last resort when the platform cannot be reached: a command and/or a webhook.

    The command gets the message as its last argument and CAREHUB_* variables in its environment; the webhook gets
    a JSON POST. Both run off the event loop and never raise into alarm handling.
    """

    def __init__(self, command: Sequence[str] | None, webhook: str | None, *, timeout: float = 10.0) -> None:
        self._command = tuple(command) if command else None
        self._webhook = webhook
        self._timeout = timeout
        self.sent: list[tuple[str, str]] = []
        self.failures = 0

    @property
    def configured(self) -> bool:
        """Whether anything will happen on :meth:`notify`."""
        return bool(self._command or self._webhook)

    async def notify(self, alarm_id: str, resident: str, message: str) -> None:
        """Run the command and post the webhook; failures are logged and counted."""
        self.sent.append((alarm_id, message))
        if self._command is not None:
            await self._run_command(alarm_id, resident, message)
        if self._webhook is not None:
            payload = json.dumps({"alarm_id": alarm_id, "resident": resident, "message": message}).encode()
            try:
                await asyncio.to_thread(self._post, payload)
            except OSError as exc:
                self.failures += 1
                _log.error("fallback webhook failed: %s", exc)

    async def _run_command(self, alarm_id: str, resident: str, message: str) -> None:
        assert self._command is not None  # noqa: S101  checked by the caller
        program = shutil.which(self._command[0]) or self._command[0]
        env = {**os.environ, "CAREHUB_ALARM_ID": alarm_id, "CAREHUB_RESIDENT": resident}
        try:
            proc = await asyncio.create_subprocess_exec(
                program, *self._command[1:], message, env=env, stdout=asyncio.subprocess.DEVNULL
            )
            async with asyncio.timeout(self._timeout):
                code = await proc.wait()
        except (OSError, TimeoutError) as exc:
            self.failures += 1
            _log.error("fallback command failed: %s", exc)
            return
        if code != 0:
            self.failures += 1
            _log.error("fallback command exited with %s", code)

    def _post(self, payload: bytes) -> None:
        assert self._webhook is not None  # noqa: S101  checked by the caller
        request = urllib.request.Request(  # noqa: S310  the installer configures an http(s) URL
            self._webhook, data=payload, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self._timeout):  # noqa: S310  as above
            pass
