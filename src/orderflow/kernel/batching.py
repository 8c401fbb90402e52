"""Natural batching: work submitted while a batch is being applied forms the next batch.

One batch is in flight at a time. An idle coalescer applies a submission at once (alone, so
no latency is added); a busy one gathers whatever arrives meanwhile, up to ``max_batch``, and
applies it with one call. The batch size follows the load by itself, with no timer. The saga
handlers' deliveries (ADR 0009), the API's order placements (ADR 0010) and the reads of the
saga's ``prepare`` steps (``Lookup``) are batched this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")
V = TypeVar("V")


class Coalescer(Generic[T, R]):
    """Applies submitted items in batches with ``apply``, one batch at a time.

    ``apply`` gets the items in submission order and answers one result per item, in the same
    order; if it raises, every submitter of that batch gets the exception. ``window_s`` > 0
    lingers that long for a batch that is not full yet (a trade of latency for batch size).
    """

    def __init__(
        self,
        apply: Callable[[list[T]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        window_s: float = 0.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._apply = apply
        self.max_batch = max_batch
        self.window_s = window_s
        self._open: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._running = False
        self._task: asyncio.Task[None] | None = None  # held: the loop keeps tasks weakly

    @property
    def busy(self) -> bool:
        """Whether a batch is being applied (or about to be)."""
        return self._running

    @property
    def waiting(self) -> int:
        """How many submissions wait for the next batch."""
        return len(self._open)

    async def submit(self, item: T) -> R:
        """Add ``item`` to the open batch; its result once its batch has been applied."""
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._open.append((item, done))
        if len(self._open) >= self.max_batch:
            self._full.set()
        self._start()
        return await done

    def _start(self) -> None:
        if self._running or not self._open:
            return
        self._running = True
        # A task, so that whatever is already on its way (read from the socket, say) joins
        # first; in a fresh context, since the batch is not the first submitter's.
        self._task = asyncio.get_running_loop().create_task(
            self._run(), context=contextvars.Context()
        )

    async def _run(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            if self.window_s and len(self._open) < self.max_batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.window_s):
                        await self._full.wait()
            batch, self._open = self._open[: self.max_batch], self._open[self.max_batch :]
            if len(self._open) < self.max_batch:
                self._full.clear()
            results = await self._apply([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} got {len(results)} results")
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)
        except Exception as exc:
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        finally:
            for _, done in batch:  # cancelled: its submitters must not wait for ever
                if not done.done():
                    done.cancel()
            self._running = False
            self._start()


class Lookup(Generic[K, V]):
    """Reads by key that arrive together are answered by one ``fetch`` of all their keys.

    ``fetch`` gets distinct keys and returns what it found by key; a key it did not find
    reads as None. Each read starts after it was asked for, so it sees whatever was committed
    before: a read waiting for the batch in flight is part of the next one.
    """

    def __init__(
        self, fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], *, max_batch: int
    ) -> None:
        self._fetch = fetch
        self._coalescer: Coalescer[K, V | None] = Coalescer(self._apply, max_batch=max_batch)

    async def get(self, key: K) -> V | None:
        """The value of ``key``, or None."""
        return await self._coalescer.submit(key)

    async def _apply(self, keys: list[K]) -> list[V | None]:
        found = await self._fetch(list(dict.fromkeys(keys)))
        return [found.get(key) for key in keys]
