"""What a result cost in CPU: the whole machine's busy core-seconds, read from ``/proc/stat``.

On this machine the load generator, the servers, PostgreSQL and RabbitMQ share two cores, so a
figure's price is CPU. The bench reads the machine's busy time (user, nice, system, irq,
softirq and steal; idle and iowait are not busy) a few times a second while it runs, and turns
it into CPU per operation of each ceiling and CPU per completed order of each lifecycle step.
Everything running on the machine is counted, the bench's own sampling included; a figure
is therefore an upper bound on what the operation itself costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

STAT = Path("/proc/stat")
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user nice system (idle iowait) irq softirq steal
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def busy_seconds(stat: Path = STAT) -> float | None:
    """Core-seconds the machine has spent busy since it booted; None without ``/proc/stat``."""
    try:
        first = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu":
        return None
    ticks = [int(v) for v in first[1:]]
    return sum(ticks[i] for i in _BUSY_FIELDS if i < len(ticks)) * _TICK_S


def cores() -> int:
    return os.cpu_count() or 1


class CpuSampler:
    """Samples :func:`busy_seconds` every ``interval`` seconds, with the wall time, until it
    is left; :meth:`cores_busy` then says how many cores were busy on average in a window."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []  # (wall time, busy core-seconds)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CpuSampler:
        self._sample()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._sample()

    def _sample(self) -> None:
        busy = busy_seconds()
        if busy is not None:
            self.samples.append((time.time(), busy))

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self._sample()

    def cores_busy(self, start: float, end: float) -> float | None:
        """Busy cores on average between the first and the last sample inside [start, end];
        None if they span less than a second."""
        inside = [(t, busy) for t, busy in self.samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] - inside[0][0] < 1.0:
            return None
        (t0, b0), (t1, b1) = inside[0], inside[-1]
        return (b1 - b0) / (t1 - t0)

    def ms_each(self, start: float, end: float, per_s: float | None) -> float | None:
        """Milliseconds of the machine's CPU per operation, for ``per_s`` operations a second
        in [start, end]."""
        busy = self.cores_busy(start, end)
        if busy is None or not per_s:
            return None
        return round(busy * 1000 / per_s, 2)
