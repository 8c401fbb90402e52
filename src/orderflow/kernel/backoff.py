"""Back-off between attempts to reach a service again."""

from __future__ import annotations

import asyncio
import contextlib
import random


class Backoff:
    """Exponential back-off with jitter between reconnection attempts."""

    def __init__(self, maximum_s: float, first_s: float = 0.05) -> None:
        self.maximum_s = maximum_s
        self.first_s = first_s
        self._next = first_s

    def reset(self) -> None:
        self._next = self.first_s

    async def wait(self, stop: asyncio.Event) -> None:
        """Sleep the next delay, or less if ``stop`` is set meanwhile."""
        delay = min(self._next, self.maximum_s) * (0.5 + random.random() / 2)
        self._next = min(self._next * 2, self.maximum_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
