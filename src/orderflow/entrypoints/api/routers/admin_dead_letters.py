"""The back office's dead-letter console: list, replay and discard dead letters.

Dead letters are read from the broker (``operations.dead_letters``, the same code as the
CLI); every replay or discard is recorded in ``admin_actions`` with who did it, and lands on
the order's page beside its events.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from orderflow.domain.errors import InvalidRequest
from orderflow.entrypoints.api.deps import AppState, State
from orderflow.entrypoints.api.problems import SESSION_RESPONSES, ProblemRoute
from orderflow.entrypoints.api.routers.admin import AdminAction, BackOffice, actor
from orderflow.operations import dead_letters

router = APIRouter(
    prefix="/admin/api",
    tags=["back office"],
    route_class=ProblemRoute,
    responses=SESSION_RESPONSES,
)

DRY_RUN_SAMPLE = 20
Short = Annotated[str, StringConstraints(min_length=1, max_length=200)]


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
