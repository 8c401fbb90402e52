"""Live order streams: the order feed (timeline entries in commit order) followed from a
position, filtered for one caller.

Each API process runs one ``FeedHub``. It numbers newly committed timeline entries (the
sequencer, ``timeline_feed.sequence``) when PostgreSQL says events were committed
(``NOTIFY orderflow_outbox``, sent by every writer after its commit) and publishes what it
numbered on Redis; every hub hears it there and keeps a window of the most recent entries,
from which its streams read without a query each. PostgreSQL stays the record: a hub that
finds a gap (a message lost while Redis was away) reads the gap from PostgreSQL, and every
hub polls PostgreSQL every ``poll_interval_s`` besides, so losing Redis only delays entries.
A stream whose position is older than the window reads PostgreSQL itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import structlog

from orderflow.domain.errors import InvalidRequest, NotFound, TooManyStreams
from orderflow.domain.model import FeedEntry
from orderflow.domain.orders import OrderStatus
from orderflow.kernel import fanout, outbox
from orderflow.kernel.backoff import Backoff
from orderflow.kernel.duties import Duties
from orderflow.kernel.redis import RedisLink
from orderflow.observability import metrics
from orderflow.ordering import feed_store as timeline_feed
from orderflow.ordering import store as orders

log = structlog.get_logger(__name__)

CHANNEL = "order-feed"


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """Which entries a stream shows: one order's, one customer's, by status after the entry."""

    order_id: uuid.UUID | None = None
    customer_id: uuid.UUID | None = None
    statuses: frozenset[OrderStatus] = frozenset()

    def matches(self, entry: FeedEntry) -> bool:
        """Whether ``entry`` belongs on the stream."""
        return (
            (self.order_id is None or entry.order_id == self.order_id)
            and (self.customer_id is None or entry.customer_id == self.customer_id)
            and (not self.statuses or entry.status in self.statuses)
        )


def entry_json(entry: FeedEntry) -> dict[str, Any]:
    """An entry as streams and webhooks show it (the timeline's shape, plus its order)."""
    return {
        "id": entry.id,
        "order_id": str(entry.order_id),
        "event": entry.event,
        "event_id": str(entry.event_id),
        "at": entry.at.isoformat(),
        "actor": entry.actor,
        "status": entry.status.value,
        "data": entry.data,
    }


def _encode(entries: Iterable[FeedEntry]) -> bytes:
    return orjson.dumps(
        [
            {**entry_json(e), "position": e.position, "customer_id": str(e.customer_id)}
            for e in entries
        ]
    )


def _decode(message: bytes) -> list[FeedEntry]:
    return [
        FeedEntry(
            position=int(item["position"]),
            id=int(item["id"]),
            order_id=uuid.UUID(item["order_id"]),
            customer_id=uuid.UUID(item["customer_id"]),
            event_id=uuid.UUID(item["event_id"]),
            event=item["event"],
            actor=item["actor"],
            status=OrderStatus(item["status"]),
            at=datetime.fromisoformat(item["at"]),
            data=item["data"],
        )
        for item in orjson.loads(message)
    ]


@dataclass
class FeedHub:
    """One per API process: keeps the feed numbered and a window of its latest entries."""

    pool: asyncpg.Pool
    dsn: str
    redis: RedisLink | None
    redis_url: str | None
    poll_interval_s: float = 1.0
    window_size: int = 4096
    max_backoff_s: float = 5.0
    head: int = 0  # every entry up to this position is known, and the window ends at it
    _window: deque[FeedEntry] = field(default_factory=deque)
    _advanced: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _streams: dict[uuid.UUID, int] = field(default_factory=dict)

    async def start(self, duties: Duties) -> None:
        """Read the head and start the duties (sequencer, LISTEN, Redis subscription) under
        the process's supervision."""
        self.head, _ = await timeline_feed.head(self.pool)
        duties.supervise("order_feed", self._run)
        duties.supervise("order_feed_listen", self._listen)
        if self.redis is not None and self.redis_url is not None:
            channel, url = self.redis.key(CHANNEL), self.redis_url
            duties.supervise(
                "order_feed_fanout",
                lambda: fanout.subscribe(
                    url,
                    channel,
                    self._heard,
                    self._stop,
                    on_connected=self._wake.set,
                    max_backoff_s=self.max_backoff_s,
                ),
            )

    def close(self) -> None:
        """Let the duties finish (the process's ``Duties.stop`` waits for them)."""
        self._stop.set()
        self._advanced.set()

    # --- what streams use -------------------------------------------------------------

    def recent_after(self, position: int) -> list[FeedEntry] | None:
        """The entries after ``position`` from the window; None if the window no longer
        reaches back that far (read PostgreSQL instead)."""
        if position >= self.head:
            return []
        if not self._window or self._window[0].position > position + 1:
            return None
        # From the window's end back to ``position`` (few entries: streams keep up).
        newer = []
        for entry in reversed(self._window):
            if entry.position <= position:
                break
            newer.append(entry)
        newer.reverse()
        return newer

    async def wait_beyond(self, position: int, timeout_s: float) -> None:
        """Return once the head is past ``position``, or after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.head <= position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advanced.wait(), remaining)

    def hold(self, key_id: uuid.UUID, limit: int) -> Callable[[], None]:
        """Count a stream against its key (``TooManyStreams`` past ``limit``); the function
        returned ends the count, once however often it is called."""
        if self._streams.get(key_id, 0) >= limit:
            raise TooManyStreams(f"this key already has {limit} open streams (the most allowed)")
        self._streams[key_id] = self._streams.get(key_id, 0) + 1
        metrics.STREAMS_OPEN.inc()
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            metrics.STREAMS_OPEN.dec()
            self._streams[key_id] -= 1
            if not self._streams[key_id]:
                del self._streams[key_id]

        return release

    @property
    def open_streams(self) -> int:
        """How many streams this process serves."""
        return sum(self._streams.values())

    # --- keeping up with the feed --------------------------------------------------------

    def _advance(self, entries: Iterable[FeedEntry], *, upto: int | None = None) -> bool:
        """Append the entries that continue the window; False if there is a gap. Entries read
        from PostgreSQL (``upto``: how far that read looked) are the record: a position missing
        there is gone for good (its order was deleted), so the head passes it."""
        moved = gap = False
        for entry in entries:
            if entry.position <= self.head:
                continue
            if entry.position != self.head + 1 and upto is None:
                gap = True
                break
            self._window.append(entry)
            self.head = entry.position
            moved = True
        if upto is not None and upto > self.head:
            self.head, moved = upto, True
        while len(self._window) > self.window_size:
            self._window.popleft()
        if moved:
            self._advanced.set()
            self._advanced = asyncio.Event()
        return not gap

    def _heard(self, message: bytes) -> None:
        try:
            entries = _decode(message)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("feed_message_invalid", error=repr(exc))
            return
        if not self._advance(entries):
            self._wake.set()  # a gap: read it from PostgreSQL

    async def _catch_up(self) -> None:
        """Read from PostgreSQL whatever lies beyond the head."""
        while True:
            entries, seen = await timeline_feed.read_after(self.pool, self.head, limit=1000)
            self._advance(entries, upto=seen)
            if len(entries) < 1000:
                return

    async def _sequence(self) -> bool:
        """Number new entries and publish them; False if another sequencer was at it."""
        numbered = await timeline_feed.sequence(self.pool)
        if numbered is None:
            return False
        if numbered:
            if self.redis is not None:
                await fanout.publish(self.redis, CHANNEL, _encode(numbered))
            if not self._advance(numbered):
                await self._catch_up()
        return True

    async def _run(self) -> None:
        backoff = Backoff(self.max_backoff_s)
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            self._wake.clear()
            try:
                if not await self._sequence():
                    # Another process holds the sequencer: it may have started before our
                    # commit, so look again shortly.
                    await asyncio.sleep(0.01)
                    self._wake.set()
                await self._catch_up()
                backoff.reset()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("feed_hub_failed", error=repr(exc))
                await backoff.wait(self._stop)

    async def _listen(self) -> None:
        """Each commit of events wakes the sequencer."""
        await outbox.listen_for_commits(
            self.dsn, self._wake.set, self._stop, max_backoff_s=self.max_backoff_s
        )


async def check_order(pool: asyncpg.Pool, *, order_id: uuid.UUID, owner: uuid.UUID | None) -> None:
    """NotFound unless the order exists and ``owner`` (when given) owns it."""
    async with pool.acquire() as conn:
        found = await orders.get(conn, order_id, with_details=False)
    if found is None or (owner is not None and found.customer_id != owner):
        raise NotFound(f"order {order_id} does not exist")


async def key_is_live(pool: asyncpg.Pool, key_id: uuid.UUID) -> bool:
    """Whether the key still exists unrevoked; True when the database cannot say (a stream
    is not cut off by an outage, it ends at the first check after the revocation)."""
    try:
        live = await pool.fetchval("SELECT revoked_at IS NULL FROM api_keys WHERE id = $1", key_id)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return True
    return bool(live)


async def start_position(
    pool: asyncpg.Pool, *, last_event_id: int | None, whole_history: bool
) -> tuple[int, int | None]:
    """Where a stream starts: after the entry ``last_event_id`` names, from the beginning
    (``whole_history``), or from now; with the id to announce when starting from now."""
    if last_event_id is not None:
        if last_event_id == 0:
            return 0, None
        position = await timeline_feed.position_of(pool, last_event_id)
        if position is None:
            raise InvalidRequest(f"Last-Event-ID {last_event_id} names no event of this stream")
        return position, None
    if whole_history:
        return 0, None
    position, entry_id = await timeline_feed.head(pool)
    return position, entry_id


async def follow(
    hub: FeedHub,
    pool: asyncpg.Pool,
    flt: StreamFilter,
    *,
    position: int,
    heartbeat_s: float,
    still_allowed: Callable[[], Awaitable[bool]],
    batch: int = 500,
) -> AsyncIterator[FeedEntry | None]:
    """The entries after ``position`` that match ``flt``, in feed order, then live; ``None``
    whenever ``heartbeat_s`` passed without one. Ends when ``still_allowed`` says no (it is
    asked at each heartbeat)."""
    next_beat = time.monotonic() + heartbeat_s
    while True:
        recent = hub.recent_after(position)
        if recent is None:
            entries, position = await timeline_feed.read_after(
                pool,
                position,
                order_id=flt.order_id,
                customer_id=flt.customer_id,
                statuses=sorted(flt.statuses),
                limit=batch,
            )
            more = len(entries) == batch
        else:
            entries = [e for e in recent if flt.matches(e)]
            position = recent[-1].position if recent else position
            more = False
        for entry in entries:
            yield entry
        if more:
            continue
        await hub.wait_beyond(position, max(0.0, next_beat - time.monotonic()))
        if time.monotonic() >= next_beat:
            if not await still_allowed():
                return
            yield None
            next_beat = time.monotonic() + heartbeat_s
