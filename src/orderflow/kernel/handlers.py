"""The handler registry: which saga step handles which event, and the contract handlers keep.

A handler is a plain async function. The worker runtime, for each delivery: validates the
envelope, opens one transaction, skips the delivery if the inbox already holds (event id,
handler name), runs the handler, writes the inbox row and the events the handler emitted to
the outbox in that same transaction, commits, then acks.

A step that must call the outside world (the payment gateway) does so in ``prepare``, which
runs before the transaction opens; ``prepare`` must be idempotent (it is retried on
redelivery) and its result is handed to ``handle``. A retry or a redelivery that the inbox
holds already is recognised before ``prepare``; a first delivery is not looked up, so the rare
copy of an applied event (a relay republishing) runs ``prepare`` again, and the claim then
finds it a duplicate. A ``prepare`` that returns None found
nothing to do: no transaction is opened and nothing is recorded (a redelivery asks again).

A handler marked ``batch`` may be applied to several deliveries in one transaction (one inbox
statement, one commit); if any of them fails, that transaction rolls back and each delivery
is applied on its own, so a failure still touches only its own message. A batch handler's
``prepare`` runs for each delivery on its own, concurrently, as it arrives; a delivery joins
a batch only once its ``prepare`` is done, so that a slow call to the outside world delays
its own delivery and no other, and a ``prepare`` that fails retries only its own message. A
batch handler that locks rows takes every lock before it runs, in one
global order (orders by id, then products by id), so that batches (of any worker) cannot
deadlock: a ``claim`` that locks (``ordering.claim_and_lock_orders``) row-locks the batch's
orders with the statement that claims them in the inbox, and ``lock_batch`` locks what else
the handler will lock (products), for the
batch's orders at once, or for the one order of a delivery applied alone; what it returns
is the third argument of ``handle``. It may also do the batch's work that one statement can
do for all its orders (read their stock, register their payments). Writes a handler gathers
over its batch are made once, at the unit of work's flush: with the events, in their
statement, when nothing can refuse them (``UnitOfWork.write_with_events``: the stock a
reservation took), or by one statement of their own just before (a ``before_flush`` of a
``UnitOfWork.collector``: the charges' settles, whose results decide the events). A handler
applied one delivery at a time may declare such a ``claim`` too: its claim then locks the
order the same way, a round trip fewer.

A handler whose whole effect is rows written from its deliveries (notifications, a status
change and its event) may be a ``statement`` instead of a ``handle``: one SQL statement that claims
the deliveries in the inbox (``inbox.claimed_cte``) and writes its rows, run outside any
explicit transaction. The statement is the transaction: one round trip per batch instead of
``BEGIN``, claim, writes and ``COMMIT``, with the same effectively-once guarantee. The steps
that only move an order from one status to the next are such statements too
(``transitions.status_step``): their events are made before the statement, which writes
those of the orders it moved.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from orderflow.domain.events import Envelope, Event
from orderflow.kernel.uow import UnitOfWork


class TransientError(Exception):
    """A failure worth retrying later (a timeout, a partner that is down)."""


class PermanentError(Exception):
    """A failure no retry will fix (invalid data); the message goes to the dead letters."""


class Defer(Exception):
    """Not yet: redeliver this message after ``delay_s`` seconds (through the broker's delay
    queues, never by sleeping). Not a failure: it does not count as an attempt."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"deferred for {delay_s} s")
        self.delay_s = delay_s


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a handler sees it."""

    envelope: Envelope
    event: Event
    attempt: int = 1  # 1 for the first delivery, counted across retry queues
    redelivered: bool = False  # the broker delivered this message before (a worker died)

    @property
    def is_repeat(self) -> bool:
        """A retry or a redelivery: a handler may have applied it already.

        A first delivery may be a copy too (a relay that died before its commit publishes
        its rows again), but rarely; the inbox claim recognises it either way.
        """
        return self.attempt > 1 or self.redelivered


HandleFn = Callable[[Delivery, UnitOfWork, Any], Awaitable[None]]
PrepareFn = Callable[[Delivery], Awaitable[Any]]
# Locks what else a batch handler will lock for these orders, after them, and may do the
# batch's set-based work (see above); what it returns is handed to ``handle``.
LockBatchFn = Callable[[UnitOfWork, list[uuid.UUID]], Awaitable[Any]]
# Claims (in the inbox of the named handler) and applies deliveries in one statement; returns
# the event ids it claimed: the others were applied before.
# Claims (event id, order id) pairs, sorted, in the named handler's inbox; the event ids claimed
# now. The default claims the event ids alone.
ClaimFn = Callable[
    [UnitOfWork, str, Sequence[tuple[uuid.UUID, uuid.UUID | None]]], Awaitable[set[uuid.UUID]]
]
StatementFn = Callable[[asyncpg.Pool, str, Sequence[Delivery]], Awaitable[set[uuid.UUID]]]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A named consumer: its own queue, its own inbox rows, the events it subscribes to."""

    name: str
    event_types: tuple[str, ...]
    handle: HandleFn | None
    prepare: PrepareFn | None = None
    batch: bool = False
    # How deliveries are claimed in the inbox: None claims the event ids alone; a capability
    # may lock its rows with the same statement (``ordering.claim_and_lock_orders``).
    claim: ClaimFn | None = None
    lock_batch: LockBatchFn | None = None
    statement: StatementFn | None = None
    # How long an idle batch handler lingers for more deliveries before it applies a batch;
    # None: the worker's ``worker_batch_window_s`` (0, apply at once).
    batch_window_s: float | None = None

    def __post_init__(self) -> None:
        if (self.handle is None) == (self.statement is None):
            raise ValueError(f"handler {self.name!r}: give either handle or statement")
        if self.statement is not None and not self.batch:
            raise ValueError(f"handler {self.name!r}: a statement handler is a batch handler")
        if self.lock_batch is not None and self.prepare is not None:
            raise ValueError(f"handler {self.name!r}: lock_batch and prepare both feed handle")
        if self.statement is not None and self.prepare is not None:
            raise ValueError(f"handler {self.name!r}: a statement has no prepare step")
        if self.statement is not None and (self.lock_batch or self.claim):
            raise ValueError(f"handler {self.name!r}: a statement takes its own locks")
        if self.batch_window_s is not None and (not self.batch or self.batch_window_s < 0):
            raise ValueError(
                f"handler {self.name!r}: a batch window needs a batch handler and is not negative"
            )


class Registry:
    """Handlers by name and by event type."""

    def __init__(self, specs: Iterable[HandlerSpec] = ()) -> None:
        self._by_name: dict[str, HandlerSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: HandlerSpec) -> None:
        """Register ``spec``; names are unique."""
        if spec.name in self._by_name:
            raise ValueError(f"handler {spec.name!r} registered twice")
        self._by_name[spec.name] = spec

    def get(self, name: str) -> HandlerSpec:
        """The handler called ``name``."""
        return self._by_name[name]

    @property
    def names(self) -> list[str]:
        """Every handler name, sorted."""
        return sorted(self._by_name)

    def select(self, names: Iterable[str] | None) -> Registry:
        """A registry with only the named handlers (all when ``names`` is None)."""
        if names is None:
            return self
        wanted = list(names)
        unknown = sorted(set(wanted) - set(self._by_name))
        if unknown:
            raise KeyError(f"unknown handlers: {', '.join(unknown)}")
        return Registry(self._by_name[n] for n in wanted)

    def subscribers(self, event_type: str) -> list[HandlerSpec]:
        """The handlers that receive ``event_type``."""
        return [s for s in self._by_name.values() if event_type in s.event_types]

    def __iter__(self) -> Iterator[HandlerSpec]:
        return iter(self._by_name.values())
