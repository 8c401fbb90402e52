"""The outbox: waking relays after a commit; claiming, marking, pruning rows (the relay)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import structlog

log = structlog.get_logger(__name__)

CHANNEL = "orderflow_outbox"
_NOTIFY = f"NOTIFY {CHANNEL}"
# A process sends at most one NOTIFY per this many seconds: the first after a quiet spell at
# once, later ones coalesced. Each NOTIFY is a tiny transaction of its own that flushes WAL.
COALESCE_S = 0.005


class RelayWaker:
    """Tells the relays of one database that events were committed, outside any transaction.

    Writers call ``nudge`` after their commit. Not a trigger: a transaction that sends NOTIFY
    holds a database-wide lock through its commit, which serialised every order's commit
    (migration 0002, ADR 0007). A lost NOTIFY only costs latency: relays also poll.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def nudge(self) -> None:
        """Something was committed: make sure a NOTIFY follows it."""
        self._pending = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # A nudge while this task is suspended sets _pending again, so a NOTIFY always
        # follows the last commit; the task ends (and a later nudge starts another) once
        # nothing is pending.
        while self._pending and not self.pool.is_closing():
            self._pending = False
            try:
                await self.pool.execute(_NOTIFY)
            except Exception as exc:  # the relays' polling picks the events up
                log.warning("relay_wakeup_failed", error=repr(exc))
                return
            await asyncio.sleep(COALESCE_S)


_wakers: dict[int, RelayWaker] = {}


def wake_relays(pool: asyncpg.Pool) -> None:
    """Call after committing outbox rows through ``pool``: relays wake within milliseconds."""
    waker = _wakers.get(id(pool))
    if waker is None or waker.pool is not pool:
        for key in [k for k, w in _wakers.items() if w.pool.is_closing()]:
            del _wakers[key]
        waker = _wakers[id(pool)] = RelayWaker(pool)
    waker.nudge()


async def listen_for_commits(
    dsn: str, on_commit: Callable[[], None], stop: asyncio.Event, *, max_backoff_s: float
) -> None:
    """Call ``on_commit`` for every wake-up the writers send after committing events, until
    ``stop``; the LISTEN connection is re-opened with back-off when it drops, and
    ``on_commit`` is called each time it (re)opens (for what was missed meanwhile)."""
    from orderflow.kernel.backoff import Backoff

    backoff = Backoff(max_backoff_s)
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen_failed", channel=CHANNEL, error=repr(exc))
            await backoff.wait(stop)
            continue
        lost = asyncio.Event()
        conn.add_termination_listener(lambda *_, lost=lost: lost.set())
        try:
            await conn.add_listener(CHANNEL, lambda *_: on_commit())
            backoff.reset()
            on_commit()
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen_lost", channel=CHANNEL, error=repr(exc))
        finally:
            conn.terminate()


# SKIP LOCKED lets several relays share the table: each claims rows no other relay holds.
# The envelope is read as text: it is published as it is stored, never decoded here. The
# marks of the batch before travel in the same statement ($3): one round trip per batch.
_CLAIM = """
WITH marked AS (
    UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($3::bigint[])
)
SELECT id, event_id, event_type, envelope::text AS body,
       envelope ->> 'correlation_id' AS correlation_id,
       envelope ->> 'causation_id' AS causation_id
FROM outbox
WHERE published_at IS NULL AND NOT (id = ANY($2::bigint[])) AND NOT (id = ANY($3::bigint[]))
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
_MARK = "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[])"
_PRUNE = """
DELETE FROM outbox WHERE id IN (
    SELECT id FROM outbox
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1)
    LIMIT $2
)
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One unpublished event, as the relay publishes it."""

    id: int
    event_id: str
    event_type: str
    body: bytes
    correlation_id: str | None
    causation_id: str | None


async def claim(
    conn: asyncpg.Connection, *, limit: int, skip: list[int], mark: list[int]
) -> list[OutboxRow]:
    """Mark ``mark`` published, then lock up to ``limit`` other unpublished rows, oldest first.

    Call inside a transaction: the rows stay locked, and the marks uncommitted, until it ends.
    """
    records = await conn.fetch(_CLAIM, limit, skip, mark)
    return [
        OutboxRow(
            id=r["id"],
            event_id=str(r["event_id"]),
            event_type=r["event_type"],
            body=r["body"].encode(),
            correlation_id=r["correlation_id"],
            causation_id=r["causation_id"],
        )
        for r in records
    ]


async def mark_published(conn: asyncpg.Connection, ids: list[int]) -> None:
    """Record that the broker confirmed these rows."""
    if ids:
        await conn.execute(_MARK, ids)


async def prune(pool: asyncpg.Pool, *, older_than_s: float, batch: int = 5000) -> int:
    """Delete published rows older than the retention, in bounded batches; how many went."""
    total = 0
    while True:
        status = await pool.execute(_PRUNE, float(older_than_s), batch)
        deleted = int(status.split()[-1])
        total += deleted
        if deleted < batch:
            return total
