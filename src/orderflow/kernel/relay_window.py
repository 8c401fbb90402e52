"""The relay's window: one transaction kept open across batches of the outbox, committed on a
timer (ADR 0013), so that a batch's marks travel with the next claim."""

from __future__ import annotations

import contextlib
import time

import asyncpg

from orderflow.kernel import outbox


class RelayWindow:
    """The relay's transaction, kept open across batches and committed every ``interval`` s.

    ``pending`` holds the ids the broker confirmed whose marks have not been sent yet; they go
    with the next claim, or with the commit. Until the commit, the window's rows stay locked
    (other relays skip them) and its marks invisible; a rollback makes them all unpublished
    again, to be published a second time.
    """

    def __init__(self, pool: asyncpg.Pool, interval: float) -> None:
        self.pool = pool
        self.interval = interval
        self.pending: list[int] = []
        self.claimed = 0  # rows claimed in the open window
        self.conn: asyncpg.Connection | None = None
        self._stack = contextlib.AsyncExitStack()
        self._deadline = 0.0

    async def open(self) -> asyncpg.Connection:
        """The window's connection, beginning a transaction if none is open."""
        if self.conn is None:
            async with contextlib.AsyncExitStack() as stack:
                conn = await stack.enter_async_context(self.pool.acquire())
                await stack.enter_async_context(conn.transaction())
                self._stack = stack.pop_all()
            self.conn, self.claimed = conn, 0
            self._deadline = time.monotonic() + self.interval
        return self.conn

    def remaining(self) -> float:
        """Seconds until the open window is due to commit (0 when closed or overdue)."""
        return max(0.0, self._deadline - time.monotonic()) if self.conn is not None else 0.0

    async def commit(self) -> None:
        """Send the pending marks and commit; nothing to do when no window is open."""
        if self.conn is None:
            return
        try:
            await outbox.mark_published(self.conn, self.pending)
        except BaseException:
            await self.abandon()
            raise
        self.conn, self.pending, self.claimed = None, [], 0
        await self._stack.aclose()  # commits, then returns the connection to the pool

    async def abandon(self) -> None:
        """Roll back (after a failure): the window's rows are unpublished again."""
        if self.conn is None:
            return
        self.conn, self.pending, self.claimed = None, [], 0
        with contextlib.suppress(Exception):  # a lost connection rolled back on its own
            await self._stack.__aexit__(RuntimeError, RuntimeError("relay window abandoned"), None)
