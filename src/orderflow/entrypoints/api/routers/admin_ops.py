"""The back office's operations: the dead-letter console, overdue orders, system health.

Dead letters are read from the broker (``entrypoints.dead_letters``, the same code as the
CLI); every replay or discard is recorded in ``admin_actions`` with who did it, and lands on
the order's page beside its events.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orderflow.domain import saga
from orderflow.domain.errors import InvalidRequest
from orderflow.entrypoints.api.deps import AppState, State
from orderflow.entrypoints.api.problems import SESSION_RESPONSES, ProblemRoute
from orderflow.entrypoints.api.routers.admin import AdminAction, BackOffice, actor
from orderflow.kernel.topology import Names
from orderflow.observability import metrics
from orderflow.operations import dead_letters, stuck
from orderflow.operations.sla import overdue_orders

router = APIRouter(
    prefix="/admin/api",
    tags=["back office"],
    route_class=ProblemRoute,
    responses=SESSION_RESPONSES,
)

DRY_RUN_SAMPLE = 20
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]


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
    for handler in queue_of:
        watched += [q for _, q in names.handler(handler).retries]
    stats = await state.broker.queue_stats(watched) if state.broker else dict.fromkeys(watched)
    declared = {h for h, q in queue_of.items() if stats.get(q) is not None}
    bindings = {s.name: list(s.event_types) for s in registry if s.name in declared}
    return SagaMap(bindings=bindings, queue_of=queue_of, stats=stats)


async def letters(state: AppState, **kwargs: Any) -> list[dead_letters.DeadLetter]:
    """``dead_letters.process`` for the back office, one call at a time in this process.

    A call holds the letters it read unacknowledged until it ends, so another call running at
    the same moment would not see them (an order page's refresh would hide the letters from
    the console, or from a replay). Calls of one API process take turns; two processes can
    still meet, for the few milliseconds a call lasts.
    """
    async with state.dead_letters_lock:
        return await dead_letters.process(state.settings, **kwargs)


class LetterFilter(BaseModel):
    """Which dead letters: every field optional."""

    model_config = ConfigDict(extra="forbid")
    handler: Short | None = None
    reason: Short | None = Field(default=None, description="a part of the error, any case")
    event_type: Short | None = None
    min_age_s: float | None = Field(default=None, ge=0, description="failed at least this ago")
    max_age_s: float | None = Field(default=None, ge=0, description="failed at most this ago")
    order_id: uuid.UUID | None = None

    def as_filter(self) -> dead_letters.Filter:
        return dead_letters.Filter(
            handler=self.handler,
            reason=self.reason,
            event_type=self.event_type,
            min_age_s=self.min_age_s,
            max_age_s=self.max_age_s,
            order_id=str(self.order_id) if self.order_id else None,
        )


class LetterAction(BaseModel):
    """Replay or discard: the letters named by id, or every letter the filter matches."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Short] = Field(default_factory=list, max_length=1000)
    filter: LetterFilter | None = Field(default=None, description="every letter matching it")
    dry_run: bool = Field(default=False, description="change nothing; say what it would take")
    reason: Short | None = Field(default=None, description="why (required to discard)")


@router.get("/dead-letters", summary="The dead letters, filtered")
async def list_dead_letters(
    state: State,
    _session: BackOffice,
    handler: Annotated[str | None, Query(max_length=200)] = None,
    reason: Annotated[str | None, Query(max_length=200)] = None,
    event_type: Annotated[str | None, Query(max_length=200)] = None,
    min_age_s: Annotated[float | None, Query(ge=0)] = None,
    max_age_s: Annotated[float | None, Query(ge=0)] = None,
    order_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> dict[str, Any]:
    where = LetterFilter(
        handler=handler,
        reason=reason,
        event_type=event_type,
        min_age_s=min_age_s,
        max_age_s=max_age_s,
        order_id=order_id,
    )
    found = await letters(state, action="list", where=where.as_filter(), limit=limit)
    return {"count": len(found), "items": [letter.as_dict() for letter in found]}


async def _act_on_letters(
    state: AppState, session: Any, body: LetterAction, action: Literal["replay", "discard"]
) -> dict[str, Any]:
    if not body.ids and body.filter is None:
        raise InvalidRequest("name dead letters by id, or give a filter")
    if action == "discard" and not body.dry_run and not body.reason:
        raise InvalidRequest("say why the dead letters are discarded (reason)")
    taken = await letters(
        state,
        action=action,
        ids=body.ids,
        every=not body.ids,
        where=(body.filter or LetterFilter()).as_filter(),
        dry_run=body.dry_run,
    )
    if not body.dry_run:
        await record_letters(
            state, actor=actor(session), action=action, letters=taken, why=body.reason
        )
    return {
        "action": action,
        "dry_run": body.dry_run,
        "count": len(taken),
        "first": [letter.as_dict() for letter in taken[:DRY_RUN_SAMPLE]],
    }


async def record_letters(
    state: AppState,
    *,
    actor: str,
    action: str,
    letters: list[dead_letters.DeadLetter],
    why: str | None,
) -> None:
    """Record the letters acted on (``admin_actions``), on their orders' pages."""
    await dead_letters.record_actions(
        state.pool, actor=actor, action=action, letters=letters, why=why
    )


@router.post("/dead-letters/replay", summary="Replay dead letters to their handler (dry run first)")
async def replay_dead_letters(
    body: LetterAction, state: State, session: AdminAction
) -> dict[str, Any]:
    return await _act_on_letters(state, session, body, "replay")


@router.post("/dead-letters/discard", summary="Discard dead letters for good, with a reason")
async def discard_dead_letters(
    body: LetterAction, state: State, session: AdminAction
) -> dict[str, Any]:
    return await _act_on_letters(state, session, body, "discard")


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
    queues = []
    for handler, work in saga.queue_of.items():
        stats = saga.stats.get(work)
        retrying = sum((saga.stats.get(q) or (0, 0))[0] for _, q in names.handler(handler).retries)
        queues.append(
            {
                "handler": handler,
                "queue": work,
                "declared": stats is not None,
                "ready": stats[0] if stats else None,
                "consumers": stats[1] if stats else None,
                "retrying": retrying,
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
