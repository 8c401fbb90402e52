"""The feed hub: the order feed (timeline entries in commit order) kept numbered, and a window
of its latest entries for the live streams to read.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import asyncpg
import structlog

from orderflow.domain.errors import TooManyStreams
from orderflow.domain.model import FeedEntry
from orderflow.kernel import fanout, outbox
from orderflow.kernel.backoff import Backoff
from orderflow.kernel.duties import Duties
from orderflow.kernel.redis import RedisLink
from orderflow.observability import metrics
from orderflow.ordering import feed_store as timeline_feed
from orderflow.ordering.feed_json import decode_entries, encode_entries

log = structlog.get_logger(__name__)

CHANNEL = "order-feed"


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
            entries = decode_entries(message)
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
                await fanout.publish(self.redis, CHANNEL, encode_entries(numbered))
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
