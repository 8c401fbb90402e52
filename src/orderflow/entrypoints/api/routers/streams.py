"""Live order status as server-sent events, resumable with ``Last-Event-ID`` (docs/streaming.md).

Every frame's ``id`` is the timeline entry's id; a client that reconnects with the last one
it received gets exactly what it missed, then the live feed. Streams read the order feed
(``ordering.streams``): commit order, fanned out through Redis, backed by PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from orderflow.domain.access import Principal
from orderflow.domain.errors import Forbidden, InvalidRequest, Unauthenticated
from orderflow.domain.model import FeedEntry
from orderflow.domain.orders import OrderStatus
from orderflow.entrypoints.api.deps import AppState, Reader, State
from orderflow.entrypoints.api.problems import EDGE_RESPONSES, ProblemRoute
from orderflow.ordering import streams as order_streams
from orderflow.ordering.feed_json import entry_json
from orderflow.ordering.streams import StreamFilter

router = APIRouter(
    prefix="/api/v1/orders",
    tags=["order streams"],
    responses=EDGE_RESPONSES,
    route_class=ProblemRoute,
)

_SSE = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "server-sent events: one per timeline entry (`id:` = the entry's id, "
        "`data:` = the entry as JSON), `: heartbeat` comments, `event: revoked` before the "
        "stream ends because its key was revoked",
    },
    422: {"description": "a Last-Event-ID that names no event"},
    429: {"description": "the key already holds its most open streams"},
}
_RETRY_MS = 2000

LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=32,
        description="the id of the last frame received: the stream resumes right after it",
    ),
]
LastEventIdQuery = Annotated[
    int | None,
    Query(
        alias="last_event_id",
        ge=0,
        description="as the Last-Event-ID header, for clients that cannot set it",
    ),
]
Statuses = Annotated[
    list[OrderStatus],
    Query(alias="status", description="only entries after which the order is in one of these"),
]


def _last_event_id(header: str | None, query: int | None) -> int | None:
    if header is not None and header.strip():
        value = header.strip()
        if not value.isdigit():
            raise InvalidRequest(f"Last-Event-ID must be an event id from this API, not {value!r}")
        return int(value)
    return query


def _frame(entry: FeedEntry) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (entry.id, orjson.dumps(entry_json(entry)))


async def _respond(
    state: AppState,
    principal: Principal,
    flt: StreamFilter,
    *,
    last_event_id: int | None,
    whole_history: bool,
) -> StreamingResponse:
    hub = state.feed
    assert hub is not None, "the lifespan starts the feed hub"
    # A stream outlives the key cache's TTL by far: ask the database, now and at heartbeats.
    if not await order_streams.key_is_live(state.pool, principal.key_id):
        raise Unauthenticated("the API key was revoked")
    position, announce = await order_streams.start_position(
        state.pool, last_event_id=last_event_id, whole_history=whole_history
    )
    settings = state.settings
    release = hub.hold(principal.key_id, settings.stream_max_per_key)

    async def still_allowed() -> bool:
        return await order_streams.key_is_live(state.pool, principal.key_id)

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"retry: %d\n\n" % _RETRY_MS
            if announce is not None:
                # Where "now" is: a client that reconnects before its first entry resumes here.
                yield b"id: %d\nevent: ready\ndata: {}\n\n" % announce
            async for entry in order_streams.follow(
                hub,
                state.pool,
                flt,
                position=position,
                heartbeat_s=settings.stream_heartbeat_s,
                still_allowed=still_allowed,
            ):
                yield b": heartbeat\n\n" if entry is None else _frame(entry)
            yield b'event: revoked\ndata: {"detail": "the API key was revoked"}\n\n'
        finally:
            release()

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        background=BackgroundTask(release),
    )


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses=_SSE,  # type: ignore[arg-type]
    summary="Follow orders live (server-sent events)",
    description="A customer key follows its own orders; staff and admin keys every order "
    "(`customer_id` narrows it). `status` filters by the order's status after each entry. "
    "Without Last-Event-ID the stream starts now: its first frame, `event: ready`, carries "
    "the id to resume from. See docs/streaming.md.",
)
async def stream_orders(
    state: State,
    principal: Reader,
    statuses: Statuses = [],  # noqa: B006 (FastAPI copies a query list default)
    customer_id: uuid.UUID | None = None,
    last_event_id: LastEventIdHeader = None,
    last_event_id_query: LastEventIdQuery = None,
) -> StreamingResponse:
    own = principal.owner
    if own is not None and customer_id not in (None, own):
        raise Forbidden("a customer key follows its own orders only")
    flt = StreamFilter(customer_id=own or customer_id, statuses=frozenset(statuses))
    return await _respond(
        state,
        principal,
        flt,
        last_event_id=_last_event_id(last_event_id, last_event_id_query),
        whole_history=False,
    )


@router.get(
    "/{order_id}/stream",
    response_class=StreamingResponse,
    responses=_SSE,  # type: ignore[arg-type]
    summary="Follow one order live (server-sent events)",
    description="The order's whole timeline first (or what follows Last-Event-ID), then each "
    "new entry as it commits. See docs/streaming.md.",
)
async def stream_order(
    order_id: uuid.UUID,
    state: State,
    principal: Reader,
    last_event_id: LastEventIdHeader = None,
    last_event_id_query: LastEventIdQuery = None,
) -> StreamingResponse:
    await order_streams.check_order(state.pool, order_id=order_id, owner=principal.owner)
    return await _respond(
        state,
        principal,
        StreamFilter(order_id=order_id),
        last_event_id=_last_event_id(last_event_id, last_event_id_query),
        whole_history=True,
    )
