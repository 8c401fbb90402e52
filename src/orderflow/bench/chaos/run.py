"""One chaos run, start to end: a fresh database and broker names, the system's processes, the
load and the faults side by side, the replays, the wait for recovery, the figures, the audit.

Whatever happens (an error, Ctrl-C, SIGTERM), the run's processes are stopped and every shared
service is left running (``services.ensure_running``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import httpx

from orderflow.bench.chaos import faults as fault_kinds
from orderflow.bench.chaos import figures, services
from orderflow.bench.chaos.client import Call, Client, Outcome
from orderflow.bench.chaos.faults import FaultRecord, Timing
from orderflow.bench.chaos.gateway import gateway_figures
from orderflow.bench.chaos.load import Load, plans
from orderflow.bench.chaos.system import System, plan
from orderflow.bench.place import make_catalogue
from orderflow.bench.runner import BenchRun
from orderflow.bench.servers import orderflow_command
from orderflow.domain.webhooks import GATEWAY_WEBHOOKS_PATH as GATEWAY_WEBHOOKS

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChaosParams:
    """What a run does: how long and how hard it loads the system, which faults, when."""

    duration_s: float = 60.0
    rate: float = 20.0
    faults: tuple[str, ...] = ()  # empty: every fault the system can take, once
    first_fault_s: float = 5.0
    spacing_s: float | None = None  # None: spread evenly over the load
    timing: Timing = field(default_factory=Timing)
    workers: int = 1
    autopilot_delay_s: float = 0.5
    reconcile_stall_s: float = 15.0
    request_timeout_s: float = 10.0
    recovery_timeout_s: float = 180.0
    tail_s: float = 5.0  # load kept up after the last fault, to see placements recover

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        out = asdict(self)
        out["faults"] = list(self.faults)
        return out


def system_env(run: BenchRun, params: ChaosParams) -> dict[str, str]:
    """The processes' environment: the run's database and names, the autopilot on, a
    reconciler that re-drives a stalled order within the run's recovery, small pools."""
    return run.env(
        ORDERFLOW_AUTOPILOT="true",
        ORDERFLOW_AUTOPILOT_DELAY_S=str(params.autopilot_delay_s),
        ORDERFLOW_RECONCILE_STALL_S=str(params.reconcile_stall_s),
        ORDERFLOW_RECONCILE_INTERVAL_S="2",
        ORDERFLOW_DB_POOL_MAX="8",
        ORDERFLOW_LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )


async def _declare_topology(env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *orderflow_command("migrate"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"orderflow migrate failed:\n{out.decode()[-2000:]}")


async def _retrying(read: Callable[[], Awaitable[T]], *, attempts: int = 30) -> T:
    """``read()``, again after a second while PostgreSQL is away (up to ``attempts`` times)."""
    for _ in range(attempts - 1):
        try:
            return await read()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, httpx.HTTPError):
            await asyncio.sleep(1.0)
    return await read()


@dataclass
class Chaos:
    """The state of one run, shared by its concurrent parts."""

    run: BenchRun
    params: ChaosParams
    system: System
    load: Load
    started_at: float = 0.0
    records: list[FaultRecord] = field(default_factory=list)
    unplanned_exits: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False

    def say(self, text: str) -> None:
        """A line on the console, stamped with the run's clock."""
        self.run.console.print(f"[dim]{time.time() - self.started_at:6.1f} s[/dim]  {text}")

    async def inject_all(self, schedule: list[tuple[float, str]]) -> None:
        """Inject each fault at its offset (or right after the one before, if that overran)."""
        for offset, name in schedule:
            await asyncio.sleep(max(0.0, self.started_at + offset - time.time()))
            self.say(f"fault [bold]{name}[/bold]: {fault_kinds.WHAT[name]}")
            record = await fault_kinds.inject(name, self.system, self.params.timing)
            self.records.append(record)
            note = f" [red]{record.error}[/red]" if record.error else ""
            self.say(f"fault {name} over in {record.restored_at - record.started_at:.1f} s{note}")
        last = self.records[-1].restored_at if self.records else time.time()
        end = self.started_at + self.params.duration_s
        self.load.until = max(end, last + self.params.tail_s)

    async def watch(self) -> None:
        """Every second: restart a process that died without being killed by a fault (and
        count it), print the run's progress every five."""
        ticks = 0
        while not self.done:
            await asyncio.sleep(1.0)
            ticks += 1
            for name, server in list(self.system.running.items()):
                if server.process.returncode is not None and name in self.system.running:
                    del self.system.running[name]
                    self.unplanned_exits.append(
                        {"process": name, "code": server.process.returncode, "at": time.time()}
                    )
                    self.say(f"[red]{name} exited ({server.process.returncode}): restarting[/red]")
                    with contextlib.suppress(RuntimeError):
                        await self.system.start(name)
            if ticks % 5 == 0:
                counts = self.load.counts()
                self.say(
                    "placed {} | ok {} failed {} indeterminate {}".format(
                        len(self.load.placements),
                        counts["place:ok"],
                        counts["place:failed"],
                        counts["place:indeterminate"],
                    )
                )

    async def recover(self, pool: asyncpg.Pool) -> dict[str, Any]:
        """Replay unanswered placements and wait (bounded) until every order is terminal, the
        outbox is empty and the customers' follow-ups are done."""
        deadline = time.time() + self.params.recovery_timeout_s
        self.load.followups_until = deadline
        began = time.time()
        await self.load.resolve(until=deadline)
        open_orders, backlog = -1, -1
        while time.time() < deadline:
            open_orders, backlog = await _retrying(lambda: figures.open_work(pool))
            if not open_orders and not backlog and not self.load.pending:
                break
            await asyncio.sleep(1.0)
        cancelled = await self.load.drain(until=time.time())
        return {
            "waited_s": round(time.time() - began, 1),
            "open_orders": open_orders,
            "outbox_backlog": backlog,
            "followups_cut_short": cancelled,
        }


def failures(calls: list[Call], started_at: float, *, each: int = 5) -> list[dict[str, Any]]:
    """The first few requests of each kind, outcome and status that were not answered 2xx:
    when, what, and what came back."""
    out = []
    seen: Counter[tuple[str, Outcome, int | None]] = Counter()
    for call in sorted(calls, key=lambda c: c.sent_at):
        group = (call.kind, call.outcome, call.status)
        if call.outcome is Outcome.OK or seen[group] == each:
            continue
        seen[group] += 1
        problem = (call.body or {}).get("type", "") if call.body else ""
        out.append(
            {
                "at_s": round(call.sent_at - started_at, 2),
                "kind": call.kind,
                "outcome": call.outcome.value,
                "status": call.status,
                "detail": call.error or str(problem),
            }
        )
    return out


def placement_figures(calls: list[Call]) -> dict[str, dict[str, int]]:
    """Requests by kind and outcome (with the statuses of the failed ones)."""
    out: dict[str, dict[str, int]] = {}
    for call in calls:
        row = out.setdefault(call.kind, {o.value: 0 for o in Outcome})
        row[call.outcome.value] += 1
        if call.outcome is Outcome.FAILED:
            row[f"status_{call.status}"] = row.get(f"status_{call.status}", 0) + 1
    return out


async def fault_figures(
    pool: asyncpg.Pool, record: FaultRecord, calls: list[Call], started_at: float
) -> dict[str, Any]:
    """One fault's window and what it cost: placements refused or unanswered until they
    worked again, seconds until an order was placed and until one moved on after it."""
    places = [c for c in calls if c.kind == "place"]
    ok_after = [
        c.answered_at for c in places if c.sent_at >= record.ended_at and c.outcome is Outcome.OK
    ]
    recovered = min(ok_after) if ok_after else None
    until = recovered if recovered is not None else record.restored_at
    # The placements in flight at some moment of the fault, until they worked again.
    hit = [c for c in places if c.answered_at >= record.started_at and c.sent_at <= until]
    progress = await _retrying(lambda: figures.first_progress_after(pool, record.ended_at))
    return {
        "fault": record.name,
        "at_s": round(record.started_at - started_at, 1),
        "down_s": round(record.ended_at - record.started_at, 1),
        "back_s": round(record.restored_at - record.started_at, 1),
        "placements_failed": sum(c.outcome is Outcome.FAILED for c in hit),
        "placements_indeterminate": sum(c.outcome is Outcome.INDETERMINATE for c in hit),
        "recover_placement_s": round(recovered - record.ended_at, 2) if recovered else None,
        "recover_progress_s": round(max(progress - record.ended_at, 0.0), 2) if progress else None,
        "error": record.error,
    }


async def run_chaos(run: BenchRun, params: ChaosParams) -> dict[str, Any]:
    """The whole run; its document (``report.document`` adds the verdict)."""
    pool = await run.open()
    catalogue = await make_catalogue(
        pool, products=300, customers=100, stock=10**6, currency=run.settings.currency
    )
    scarce = await make_catalogue(
        pool, products=5, customers=0, stock=6, currency=run.settings.currency
    )
    env = system_env(run, params)
    await _declare_topology(env)
    roles = plan(workers=params.workers, gateway_port=urlsplit(run.settings.gateway_url).port)
    api = next(r for r in roles if r.name == "api")
    env["ORDERFLOW_GATEWAY_WEBHOOK_URL"] = f"http://127.0.0.1:{api.port}{GATEWAY_WEBHOOKS}"
    system = System(roles, env, run.log_dir)
    client = Client(
        f"http://127.0.0.1:{system.api_port}", run.auth, timeout_s=params.request_timeout_s
    )
    load = Load(client, plans(catalogue, scarce.products, seed=7))
    chaos = Chaos(run, params, system, load)
    try:
        await system.start_all()
        names = list(params.faults) or fault_kinds.available(system)
        unknown = set(names) - set(fault_kinds.available(system))
        if unknown:
            raise ValueError(f"faults this system cannot take: {sorted(unknown)}")
        last = params.duration_s - params.tail_s
        schedule = (
            [(params.first_fault_s + i * params.spacing_s, n) for i, n in enumerate(names)]
            if params.spacing_s is not None
            else fault_kinds.spaced(names, start_s=params.first_fault_s, end_s=last)
        )
        chaos.started_at = time.time()
        # The load goes on until the duration is over and the last fault is behind it.
        load.until = float("inf")
        chaos.say(f"load at {params.rate:g} orders/s; faults: {', '.join(names)}")
        watcher = asyncio.create_task(chaos.watch())
        try:
            await asyncio.gather(load.run(rate=params.rate), chaos.inject_all(schedule))
            chaos.say("load over; replaying unanswered placements, waiting for recovery")
            await services.ensure_running()
            recovery = await chaos.recover(pool)
        finally:
            chaos.done = True
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        # How much of the recovery was the reconciler's: orders re-driven from their last event.
        recovery["orders_redriven"] = await asyncio.to_thread(system.log_lines, "order_redriven")
        chaos.say(f"recovered: {recovery}")
        calls = list(load.calls)
        orders = await _retrying(lambda: figures.order_figures(pool, load.accepted()))
        orders["unresolved_placements"] = len(load.unresolved())
        orders["accepted_by_replay"] = sum(p.accepted_by == "replay" for p in load.placements)
        duplicates = await _retrying(lambda: figures.duplicate_figures(pool))
        short = await _retrying(lambda: figures.short_of_stock(pool))
        gateway = await _retrying(
            lambda: gateway_figures(
                pool,
                base_url=run.settings.gateway_url,
                api_key=run.settings.gateway_api_key.get_secret_value(),
                short_of_stock=short,
            )
        )
        per_fault = [await fault_figures(pool, r, calls, chaos.started_at) for r in chaos.records]
        audit = await _retrying(run.audit)
    finally:
        await load.drain(until=time.time())  # an interrupted run's requests end here
        await client.close()
        await system.stop_all()
    return {
        "params": params.as_dict(),
        "run_id": run.run_id,
        "started_at": chaos.started_at,
        "placed": len(load.placements),
        "not_sent": load.not_sent,
        "requests": placement_figures(calls),
        "first_failures": failures(calls, chaos.started_at),
        "orders": orders,
        "duplicates": duplicates,
        "gateway": gateway,
        "faults": per_fault,
        "unplanned_exits": chaos.unplanned_exits,
        "recovery": recovery,
        "audit": audit,
    }
