"""The saga's handler kinds, and the contract every handler keeps.

A handler serves one ``Subscription`` (its name: its queue and its inbox rows; the event types
it receives). The worker runtime, for each batch of deliveries: validates the envelopes, claims
them in the inbox (skipping those applied before), runs the handler, and writes the inbox rows,
the handler's writes and the events it emitted in one transaction, then acks.

There are three kinds, and a handler is one of them:

- ``TransactionStep``: plain code over the whole batch inside one transaction
  (``apply(uow, deliveries)``): the deliveries claimed now, in arrival order. Its ``claim`` may
  row-lock what the deliveries are about with the statement that claims them
  (``ordering.claim_and_lock_orders``: the orders, by id, so that batches of any worker cannot
  deadlock); whatever else it locks, it locks first thing, in one global order (products by id).
- ``CallStep``: a step that calls an outside service (the payment gateway). ``call`` runs for
  each delivery on its own, outside any transaction, concurrently, as deliveries arrive, and
  must be idempotent (it runs again on redelivery); a delivery joins a batch once its call is
  done, so a slow call delays only its own delivery. ``record(uow, answered)`` then records the
  batch's answers in one transaction. A ``call`` that returns None found nothing to do: nothing
  is recorded and no transaction is opened. A retry or redelivery the inbox holds already is
  recognised before the call.
- ``StatementStep``: a step whose whole effect is rows written from its deliveries (a
  notification): one SQL statement claims the deliveries in the inbox and writes its
  rows, outside any explicit transaction; the statement is the transaction.

A batch that fails rolls back and its deliveries are applied one by one, so a failure touches
only its own message. ``batched=False`` applies every delivery alone (a step that defers).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from orderflow.domain.events import Envelope, Event
from orderflow.domain.saga import Subscription
from orderflow.kernel.uow import UnitOfWork

__all__ = [
    "CallStep",
    "Defer",
    "Delivery",
    "Handler",
    "PermanentError",
    "Registry",
    "StatementStep",
    "Subscription",
    "TransactionStep",
    "TransientError",
]


class TransientError(Exception):
    """A failure worth retrying later (a timeout, a partner that is down)."""


class PermanentError(Exception):
    """A failure no retry will fix (invalid data); the message goes to the dead letters."""


class Defer(Exception):
    """Not yet: redeliver this message after ``delay_s`` seconds (a delivery scheduled in
    PostgreSQL, never by sleeping). Not a failure: it does not count as an attempt."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"deferred for {delay_s} s")
        self.delay_s = delay_s


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as a handler sees it."""

    envelope: Envelope
    event: Event
    attempt: int = 1  # 1 for the first delivery, counted across scheduled retries
    redelivered: bool = False  # the broker delivered this message before (a worker died)

    @property
    def is_repeat(self) -> bool:
        """A retry or a redelivery: a handler may have applied it already.

        A first delivery may be a copy too (a relay that died before its commit publishes
        its rows again), but rarely; the inbox claim recognises it either way.
        """
        return self.attempt > 1 or self.redelivered


# Claims (event id, order id) pairs, sorted, in the named handler's inbox; the event ids claimed
# now. The default claims the event ids alone.
ClaimFn = Callable[
    [UnitOfWork, str, Sequence[tuple[uuid.UUID, uuid.UUID | None]]], Awaitable[set[uuid.UUID]]
]
ApplyFn = Callable[[UnitOfWork, Sequence[Delivery]], Awaitable[None]]
CallFn = Callable[[Delivery], Awaitable[Any]]
RecordFn = Callable[[UnitOfWork, Sequence[tuple[Delivery, Any]]], Awaitable[None]]
# Claims (in the inbox of the named handler) and applies deliveries in one statement; returns
# the event ids it claimed: the others were applied before.
StatementFn = Callable[[asyncpg.Pool, str, Sequence[Delivery]], Awaitable[set[uuid.UUID]]]


@dataclass(frozen=True, slots=True)
class _Step:
    subscription: Subscription
    # Batches of deliveries per transaction (natural batching); False: one delivery at a time.
    batched: bool = True
    # How long an idle handler lingers for more deliveries before it applies a batch; None:
    # the worker's ``worker_batch_window_s`` (0, apply at once).
    window_s: float | None = None

    def __post_init__(self) -> None:
        if self.window_s is not None and (not self.batched or self.window_s < 0):
            raise ValueError(f"handler {self.name!r}: a window needs batches and is not negative")

    @property
    def name(self) -> str:
        """The handler's name: its queue and its inbox rows."""
        return self.subscription.name

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types it receives."""
        return self.subscription.event_types


@dataclass(frozen=True, slots=True, kw_only=True)
class TransactionStep(_Step):
    """Plain code over a batch of deliveries in one transaction."""

    apply: ApplyFn
    claim: ClaimFn | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStep(_Step):
    """A call to an outside service per delivery, then the batch's answers recorded in one
    transaction."""

    call: CallFn
    record: RecordFn
    claim: ClaimFn | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementStep(_Step):
    """A batch claimed and applied by one statement."""

    apply: StatementFn

    def __post_init__(self) -> None:
        _Step.__post_init__(self)
        if not self.batched:
            raise ValueError(f"handler {self.name!r}: a statement step takes batches")


Handler = TransactionStep | CallStep | StatementStep


class Registry:
    """Handlers by name and by event type."""

    def __init__(self, handlers: Iterable[Handler] = ()) -> None:
        self._by_name: dict[str, Handler] = {}
        for handler in handlers:
            self.add(handler)

    def add(self, handler: Handler) -> None:
        """Register ``handler``; names are unique."""
        if handler.name in self._by_name:
            raise ValueError(f"handler {handler.name!r} registered twice")
        self._by_name[handler.name] = handler

    def get(self, name: str) -> Handler:
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

    def subscribers(self, event_type: str) -> list[Handler]:
        """The handlers that receive ``event_type``."""
        return [h for h in self._by_name.values() if event_type in h.event_types]

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._by_name.values())
