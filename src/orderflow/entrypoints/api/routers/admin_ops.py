"""The back office's operations: orders waiting or overdue, and system health (queues,
outbox, dead letters, processes, recent errors). The dead-letter console is in
``admin_dead_letters``."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from orderflow.domain import saga
from orderflow.entrypoints.api.deps import AppState, State
from orderflow.entrypoints.api.problems import SESSION_RESPONSES, ProblemRoute
from orderflow.entrypoints.api.routers.admin import BackOffice
from orderflow.entrypoints.api.routers.admin_dead_letters import letters
from orderflow.kernel import scheduled
from orderflow.kernel.topology import Names
from orderflow.observability import metrics
from orderflow.operations import stuck
from orderflow.operations.sla import overdue_orders

router = APIRouter(
    prefix="/admin/api",
    tags=["back office"],
    route_class=ProblemRoute,
    responses=SESSION_RESPONSES,
)


@dataclass(frozen=True, slots=True)
class SagaMap:
    """Which handler consumes which events, from which queue, and how deep each queue is."""

    bindings: dict[str, list[str]]  # handlers whose work queue exists on the broker
    queue_of: dict[str, str]
    stats: dict[str, tuple[int, int] | None]  # queue -> (ready, consumers)


async def saga_map(state: AppState) -> SagaMap:
    """The handlers (autopilot's too, when its queue was declared) and their queues' stats."""
    registry = saga.subscriptions(autopilot=True)
    names = Names.from_settings(state.settings)
    queue_of = {spec.name: names.handler(spec.name).work for spec in registry}
    watched = [*queue_of.values(), names.dead_letters]
    stats = await state.broker.queue_stats(watched) if state.broker else dict.fromkeys(watched)
    declared = {h for h, q in queue_of.items() if stats.get(q) is not None}
    bindings = {s.name: list(s.event_types) for s in registry if s.name in declared}
    return SagaMap(bindings=bindings, queue_of=queue_of, stats=stats)


@router.get("/stuck", summary="Orders waiting on the machinery or overdue, oldest first")
async def stuck_orders(state: State, _session: BackOffice) -> dict[str, Any]:
    saga = await saga_map(state)
    consumed = {t for h, types in saga.bindings.items() if h not in stuck.BYSTANDERS for t in types}
    found = await stuck.stuck_orders(state.pool, consumed=consumed)
    for letter in await letters(state, action="list"):
        if letter.order_id:
            found.append(
                {
                    "order_id": letter.order_id,
                    "status": None,
                    "since": letter.failed_at,
                    "code": "dead_lettered",
                    "text": f"{letter.event_type} was dead-lettered by {letter.handler}: "
                    f"{letter.error}",
                }
            )
    for late in await overdue_orders(state.pool, limit=200):
        found.append(
            {
                "order_id": late.order_id,
                "status": late.status,
                "since": late.due_at,
                "code": "overdue",
                "text": f"overdue: {late.status} since {late.since:%Y-%m-%d %H:%M:%S}",
            }
        )
    # A dead-lettered event is also one no handler applied: say the more precise of the two.
    dead = {r["order_id"] for r in found if r["code"] == "dead_lettered"}
    found = [r for r in found if not (r["code"] == "not_applied" and r["order_id"] in dead)]
    unknown = [uuid.UUID(r["order_id"]) for r in found if r["status"] is None]
    if unknown:
        rows = await state.pool.fetch("SELECT id, status FROM orders WHERE id = ANY($1)", unknown)
        statuses = {str(r["id"]): r["status"] for r in rows}
        for r in found:
            r["status"] = r["status"] or statuses.get(r["order_id"])
    epoch = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda r: r["since"] or epoch)
    return {"items": found[:500]}


@router.get("/overdue", summary="Orders past their status's SLA deadline, oldest first")
async def overdue(state: State, _session: BackOffice) -> dict[str, Any]:
    found = await overdue_orders(state.pool, limit=500)
    return {
        "deadlines_s": state.settings.sla_deadlines_s,
        "items": [
            {
                "order_id": o.order_id,
                "status": o.status,
                "since": o.since,
                "due_at": o.due_at,
                "total": o.total,
                "currency": o.currency,
            }
            for o in found
        ],
    }


_OUTBOX = """
SELECT count(*) AS backlog, min(created_at) AS oldest, now() AS at
FROM outbox WHERE published_at IS NULL
"""
_PROCESSES = """
SELECT split_part(application_name, ' ', 1) AS process,
       split_part(application_name, ' ', 2) AS instance,
       count(*) AS connections, min(backend_start) AS since,
       max(greatest(state_change, backend_start)) AS last_active
FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'orderflow-%'
GROUP BY 1, 2 ORDER BY 1, 2
"""


@router.get("/health", summary="Queues, outbox, dead letters, processes, recent errors")
async def health(state: State, _session: BackOffice) -> dict[str, Any]:
    saga = await saga_map(state)
    outbox = await state.pool.fetchrow(_OUTBOX)
    processes = await state.pool.fetch(_PROCESSES)
    names = Names.from_settings(state.settings)
    # Retries and deferrals wait in PostgreSQL until due (ADR 0028), not in the broker.
    waiting = await scheduled.waiting_by_queue(state.pool, prefix=names.queue_head)
    queues = []
    for handler, work in saga.queue_of.items():
        stats = saga.stats.get(work)
        later = waiting.get(work, {})
        queues.append(
            {
                "handler": handler,
                "queue": work,
                "declared": stats is not None,
                "ready": stats[0] if stats else None,
                "consumers": stats[1] if stats else None,
                "retrying": later.get("retry", 0),
                "deferred": later.get("defer", 0),
            }
        )
    dead = saga.stats.get(names.dead_letters)
    return {
        "at": outbox["at"],
        "broker": await state.broker.check() if state.broker else "unknown",
        "queues": queues,
        "dead_letters": dead[0] if dead else None,
        "outbox": {
            "backlog": outbox["backlog"],
            "oldest": outbox["oldest"],
            "age_s": (outbox["at"] - outbox["oldest"]).total_seconds() if outbox["oldest"] else 0,
        },
        "processes": [dict(p) for p in processes],
        "errors": recent_errors(state),
    }


def recent_errors(state: AppState) -> dict[str, Any]:
    """This API process's 5xx share since the previous look at least a minute ago (and
    since it started): requests and errors from its own counters."""
    total = errors = 0.0
    for family in metrics.HTTP_REQUESTS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                total += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
    now = time.monotonic()
    history: list[tuple[float, float, float]] = state.error_samples
    history.append((now, total, errors))
    while len(history) > 2 and now - history[1][0] >= 60:
        history.pop(0)
    then, total0, errors0 = history[0]
    window_total, window_errors = total - total0, errors - errors0
    return {
        "window_s": round(now - then, 1),
        "requests": int(window_total),
        "errors": int(window_errors),
        "error_rate": window_errors / window_total if window_total else 0.0,
        "since_start": {"requests": int(total), "errors": int(errors)},
    }
