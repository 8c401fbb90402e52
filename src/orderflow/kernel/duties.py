"""Supervised duties: the long-running tasks of a process, kept running whatever they meet.

A *duty* is a loop a process runs beside its main work: the worker's unpaid-order sweeper and
its consumers, the relay's LISTEN connection and its pump, the API's idempotency pruner.
Before, each was a bare ``create_task``: one exception its ``except`` did not name (asyncpg's
``InternalClientError`` when PostgreSQL cut the session) ended it for good, silently, while
the process went on answering "healthy".

``Duties`` supervises them. Every exception that escapes a duty is logged (one record, with a
bounded traceback) and the duty is started again after a back-off (0.5 s doubling to
``max_backoff_s``, with jitter). A duty that failed ``failing_after`` times in a row, without a
run of ``healthy_after_s`` in between, is *failing*: ``health()`` says so and the process's
``/healthz`` answers 503, so that its supervisor (Kubernetes' liveness probe) restarts it.
The duty keeps being retried meanwhile. ``Duties`` also watches the event loop
(``LoopWatch``): a loop that has not run a tick for ``stall_after_s`` makes ``health()`` fail
too.

How a new duty registers, in the start-up of the process that runs it (``run_worker``,
``run_relay``, the API's lifespan)::

    duties = Duties("worker")                  # one per process; the process passes it on
    duties.supervise("unpaid_order_sweeper", lambda: sweep_unpaid_orders(settings, pool, stop))
    ...
    await duties.stop()                        # at shutdown: cancels them all and waits

- ``supervise`` takes a *factory*: it is called again for each restart and must return a new
  coroutine (a coroutine object can be awaited once).
- A duty loops until its work is over; if it returns, it is *finished* and not restarted
  (e.g. after the process's ``stop`` event was set, or when it is turned off by settings).
- A duty handles the failures it expects (a transient database error: log, wait, go on);
  anything else may simply escape: the supervisor is the net for what nobody foresaw.
- Name it in snake_case for what it does; the name is a metric label
  (``orderflow_duty_restarts_total{duty}``, ``orderflow_duty_failing{duty}``) and a key of
  ``/healthz``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from orderflow.observability import metrics

log = structlog.get_logger(__name__)

DutyFactory = Callable[[], Coroutine[Any, Any, None]]


class DutyState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # failed, waiting for its back-off
    FAILING = "failing"  # failed too often in a row: the process is unhealthy
    FINISHED = "finished"  # returned: its work is over


@dataclass(slots=True)
class DutyStatus:
    """What ``/healthz`` shows of one duty (never an error's text: it may hold data)."""

    state: DutyState = DutyState.RUNNING
    restarts: int = 0
    consecutive_failures: int = 0
    last_error: str | None = None  # the exception's type name
    running_since: float | None = None  # monotonic start of the current run

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "restarts": self.restarts, "last_error": self.last_error}


class LoopWatch:
    """A tick every ``interval_s`` on the event loop; a loop blocked by synchronous work (or a
    runaway callback) stops ticking, which ``stalled`` reports. ``last_tick`` is a plain float,
    so a thread (the metrics server of the relay and worker) may read it while the loop is
    stuck: that is the point."""

    def __init__(self, *, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.last_tick = time.monotonic()
        self.max_lag_s = 0.0  # the longest a tick came late since start

    async def run(self) -> None:
        """Tick until cancelled."""
        while True:
            expected = time.monotonic() + self.interval_s
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            lag = max(0.0, now - expected)
            self.max_lag_s = max(self.max_lag_s, lag)
            metrics.EVENT_LOOP_LAG.observe(lag)
            self.last_tick = now

    def silent_for(self) -> float:
        """Seconds since the last tick."""
        return max(0.0, time.monotonic() - self.last_tick)


class Duties:
    """The supervised duties of one process (see the module's docstring)."""

    def __init__(
        self,
        process: str,
        *,
        max_backoff_s: float = 30.0,
        failing_after: int = 5,
        healthy_after_s: float = 30.0,
        stall_after_s: float = 10.0,
    ) -> None:
        self.process = process
        self.max_backoff_s = max_backoff_s
        self.failing_after = failing_after
        self.healthy_after_s = healthy_after_s
        self.stall_after_s = stall_after_s
        self.loop = LoopWatch()
        self.status: dict[str, DutyStatus] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None

    def supervise(self, name: str, factory: DutyFactory) -> None:
        """Start ``factory()`` as the duty ``name`` and keep it running (restarts with back-off)."""
        if name in self._tasks:
            raise ValueError(f"a duty named {name!r} is already supervised")
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self.loop.run(), name="duty:event_loop_watch")
        self.status[name] = DutyStatus()
        metrics.DUTY_FAILING.labels(name).set(0)
        self._tasks[name] = asyncio.create_task(self._keep(name, factory), name=f"duty:{name}")

    async def _keep(self, name: str, factory: DutyFactory) -> None:
        status = self.status[name]
        while True:
            status.running_since = time.monotonic()
            if status.state is not DutyState.FAILING:
                status.state = DutyState.RUNNING
            try:
                await factory()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(name, status, exc)
                await asyncio.sleep(self._backoff(status.consecutive_failures))
                continue
            status.state = DutyState.FINISHED
            status.running_since = None
            metrics.DUTY_FAILING.labels(name).set(0)
            return

    def _failed(self, name: str, status: DutyStatus, exc: Exception) -> None:
        ran_for = time.monotonic() - (status.running_since or time.monotonic())
        if ran_for >= self.healthy_after_s:
            status.consecutive_failures = 0  # it had been working: a fresh failure
        status.consecutive_failures += 1
        status.restarts += 1
        status.last_error = type(exc).__name__
        status.running_since = None
        failing = status.consecutive_failures >= self.failing_after
        status.state = DutyState.FAILING if failing else DutyState.RESTARTING
        metrics.DUTY_RESTARTS.labels(name).inc()
        metrics.DUTY_FAILING.labels(name).set(1 if failing else 0)
        with structlog.contextvars.bound_contextvars(duty=name):
            log.error(
                "duty_failed",
                failures_in_a_row=status.consecutive_failures,
                failing=failing,
                exc_info=exc,
            )

    def _backoff(self, failures: int) -> float:
        base: float = min(self.max_backoff_s, 0.5 * 2.0 ** min(failures - 1, 16))
        return base * random.uniform(0.75, 1.0)

    def failing(self) -> list[str]:
        """The duties that keep failing (empty when all is well). A failing duty is well
        again once a run of it has lasted ``healthy_after_s``."""
        now = time.monotonic()
        found = []
        for name, status in list(self.status.items()):
            if status.state is not DutyState.FAILING:
                continue
            since = status.running_since
            if since is not None and now - since >= self.healthy_after_s:
                status.state = DutyState.RUNNING
                status.consecutive_failures = 0
                metrics.DUTY_FAILING.labels(name).set(0)
                continue
            found.append(name)
        return found

    def stalled(self) -> bool:
        """Whether the event loop has not ticked for ``stall_after_s`` (only a thread, or a
        probe that times out, can see this while it lasts)."""
        return self._loop_task is not None and self.loop.silent_for() > self.stall_after_s

    def healthy(self) -> bool:
        """No duty failing and the event loop ticking."""
        return not self.failing() and not self.stalled()

    def health(self) -> dict[str, Any]:
        """The body of ``/healthz``: safe to read from another thread."""
        return {
            "status": "ok" if self.healthy() else "failing",
            "process": self.process,
            "duties": {name: s.as_dict() for name, s in list(self.status.items())},
            "event_loop": {
                "silent_for_s": round(self.loop.silent_for(), 3),
                "max_lag_s": round(self.loop.max_lag_s, 3),
                "stalled": self.stalled(),
            },
        }

    async def stop(self, *, grace_s: float = 0.0) -> None:
        """Give the duties up to ``grace_s`` to return on their own (those that watch the
        process's ``stop`` event finish their work), then cancel what is left and wait."""
        tasks = list(self._tasks.values())
        if grace_s > 0 and tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._loop_task = None
