"""What a result cost in CPU: the whole machine's busy core-seconds, read from ``/proc/stat``.

On this machine the load generator, the servers, PostgreSQL and RabbitMQ share two cores, so a
figure's price is CPU. The bench reads the machine's busy time (user, nice, system, irq,
softirq and steal; idle and iowait are not busy) a few times a second while it runs, and turns
it into CPU per operation of each ceiling and CPU per completed order of each lifecycle step.
Everything running on the machine is counted, the bench's own sampling included; a figure
is therefore an upper bound on what the operation itself costs. Once a second it also reads
every process's own CPU time, so that a step can say which part of the system spent it
(:func:`component`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
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


@dataclass
class Processes:
    """One reading of every process: its CPU seconds, its parent and its command line."""

    at: float
    cpu: dict[int, float] = field(default_factory=dict)
    parent: dict[int, int] = field(default_factory=dict)
    command: dict[int, str] = field(default_factory=dict)


def read_processes(known: dict[int, str] | None = None, proc: Path = Path("/proc")) -> Processes:
    """Every process's CPU time now; command lines are read once per pid (``known``)."""
    known = {} if known is None else known
    reading = Processes(at=time.time())
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if pid not in known:
                raw = (entry / "cmdline").read_bytes()
                known[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue  # gone meanwhile
        reading.parent[pid] = int(fields[1])
        reading.cpu[pid] = (int(fields[11]) + int(fields[12])) * _TICK_S
        reading.command[pid] = known[pid]
    return reading


def component(pid: int, reading: Processes, *, servers: int, bench: int) -> str:
    """Which part of the system a process is: a server's process by its subcommand
    (``servers`` is the root of the bench's server processes), PostgreSQL, RabbitMQ, Redis,
    the bench itself, its load generator (the bench's other children), or other."""
    command = reading.command.get(pid, "")
    ancestors, up = [], pid
    while up in reading.parent and up not in ancestors:
        ancestors.append(up)
        up = reading.parent[up]
    if servers in ancestors:  # "... -m orderflow.entrypoints.cli api --port ...": "api"
        _, cli, rest = command.partition("orderflow.entrypoints.cli ")
        return rest.split()[0] if cli and rest.strip() else "server"
    if command.startswith("postgres"):
        return "postgresql"
    if any(name in command for name in ("beam.smp", "erl_child_setup", "inet_gethost", "epmd")):
        return "rabbitmq"
    if "redis-server" in command:
        return "redis"
    if pid == bench:
        return "bench"
    if bench in ancestors:
        return "load generator"
    return "other"


class CpuSampler:
    """Samples :func:`busy_seconds` every ``interval`` seconds, with the wall time, until it
    is left; :meth:`cores_busy` then says how many cores were busy on average in a window."""

    def __init__(self, interval_s: float = 0.25, processes_every_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.processes_every_s = processes_every_s
        self.samples: list[tuple[float, float]] = []  # (wall time, busy core-seconds)
        self.processes: list[Processes] = []
        self._commands: dict[int, str] = {}
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
        if busy is None:
            return
        now = time.time()
        self.samples.append((now, busy))
        if not self.processes or now - self.processes[-1].at >= self.processes_every_s:
            self.processes.append(read_processes(self._commands))

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

    def by_component(
        self, start: float, end: float, *, servers: int, bench: int
    ) -> dict[str, float] | None:
        """Busy cores on average per part of the system (:func:`component`) between the first
        and the last process reading inside [start, end]; None if they span less than a
        second."""
        inside = [r for r in self.processes if start <= r.at <= end]
        if len(inside) < 2 or inside[-1].at - inside[0].at < 1.0:
            return None
        first, last = inside[0], inside[-1]
        spent: dict[str, float] = {}
        for pid, cpu in last.cpu.items():
            used = cpu - first.cpu.get(pid, 0.0)  # a process started inside: all of it
            if used > 0:
                part = component(pid, last, servers=servers, bench=bench)
                spent[part] = spent.get(part, 0.0) + used
        span = last.at - first.at
        return {part: used / span for part, used in sorted(spent.items(), key=lambda i: -i[1])}
