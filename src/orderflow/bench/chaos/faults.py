"""The faults ``orderflow chaos`` injects, and their schedule.

A fault has a window: it starts when the process is killed or the service stopped, it ends when
the process or service is started again (``ended_at``), and the system answers again a little
later (``restored_at``). Time to recover is counted from ``ended_at``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from orderflow.bench.chaos import services
from orderflow.bench.chaos.system import System

KILLS = ("kill-api", "kill-relay", "kill-worker", "kill-gateway")
SERVICES = ("broker", "postgresql", "redis")
FAULTS = (*KILLS, *SERVICES)
WHAT = {
    "kill-api": "SIGKILL of the API, started again after the pause",
    "kill-relay": "SIGKILL of the relay, started again after the pause",
    "kill-worker": "SIGKILL of a worker, started again after the pause",
    "kill-gateway": "SIGKILL of the payment gateway, started again after the pause",
    "broker": "rabbitmqctl stop_app, start_app after the outage, await_startup",
    "postgresql": "pg_ctlcluster <version> main restart",
    "redis": "redis-cli shutdown nosave, redis-server started again after the pause",
}


@dataclass(frozen=True, slots=True)
class Timing:
    """How long a fault lasts: a killed process or stopped Redis stays down ``pause_s``, the
    broker's app ``broker_outage_s``."""

    pause_s: float = 2.0
    broker_outage_s: float = 8.0


@dataclass
class FaultRecord:
    """One injected fault: what, and when (wall-clock seconds)."""

    name: str
    started_at: float
    ended_at: float = 0.0
    restored_at: float = 0.0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return asdict(self)


def available(system: System) -> list[str]:
    """The faults this system can take: every service, and a kill of each process it runs."""
    names = {role.name for role in system.roles}
    kills = [f for f in KILLS if f.removeprefix("kill-") in names]
    return [*kills, *SERVICES]


def spaced(faults: list[str], *, start_s: float, end_s: float) -> list[tuple[float, str]]:
    """``faults`` at even intervals between ``start_s`` and ``end_s`` (offsets in the run)."""
    if not faults:
        return []
    step = max(end_s - start_s, 0.0) / len(faults)
    return [(start_s + i * step, name) for i, name in enumerate(faults)]


async def inject(name: str, system: System, timing: Timing) -> FaultRecord:
    """Inject ``name`` and bring the process or service back; the record of its window.

    A failure while bringing it back is recorded (``error``) and the service is started by
    ``services.ensure_running`` at the end of the run in any case.
    """
    record = FaultRecord(name, started_at=time.time())
    try:
        if name in KILLS:
            role = name.removeprefix("kill-")
            await system.kill(role)
            await asyncio.sleep(timing.pause_s)
            record.ended_at = time.time()
            await system.start(role)
        elif name == "broker":
            await services.broker_stop_app()
            await asyncio.sleep(timing.broker_outage_s)
            record.ended_at = time.time()
            await services.broker_start_app()
        elif name == "postgresql":
            await services.postgresql("restart")
            record.ended_at = time.time()
        elif name == "redis":
            await services.redis_stop()
            await asyncio.sleep(timing.pause_s)
            record.ended_at = time.time()
            await services.redis_start()
        else:
            raise ValueError(f"unknown fault {name!r}")
    except Exception as exc:
        record.error = f"{type(exc).__name__}: {exc}"
    record.ended_at = record.ended_at or time.time()
    record.restored_at = time.time()
    return record
