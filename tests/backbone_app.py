"""Test-only handlers and process entry for the event-backbone tests.

The handlers read their behaviour from the ``carrier`` field of an ``order.delivered`` event:
``ok``, ``slow:MS``, ``crash`` (the process exits), ``flaky:N`` (transient failure on the
first N attempts), ``poison`` (always transient), ``bug`` (a permanent failure), ``bug-once``
(permanent the first time this process sees it), ``defer:MS`` (deferred once). Every
application is recorded in ``backbone_applied``, which has no unique key: a double
application would show.

Run as a process (the kill tests): ``python -m tests.backbone_app worker --handlers a,b`` or
``python -m tests.backbone_app relay [--stall-marker PATH]``; settings come from the
environment (``ORDERFLOW_*``), the markers' folder from ``BACKBONE_MARKERS``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import asyncpg

from orderflow.domain.events import OrderDelivered
from orderflow.kernel.database import create_pool
from orderflow.kernel.handlers import (
    CallFn,
    CallStep,
    Defer,
    Delivery,
    Handler,
    PermanentError,
    Registry,
    Subscription,
    TransactionStep,
    TransientError,
)
from orderflow.kernel.process import install_stop_signals, run
from orderflow.kernel.relay import Relay
from orderflow.kernel.uow import UnitOfWork
from orderflow.kernel.worker import Worker
from orderflow.settings import Settings

EVENT = OrderDelivered.TYPE
APPLIED_TABLE = """
CREATE TABLE IF NOT EXISTS backbone_applied (
    event_id uuid NOT NULL,
    handler  text NOT NULL,
    attempt  int NOT NULL,
    pid      int NOT NULL,
    redelivered boolean NOT NULL DEFAULT false,
    txid     bigint NOT NULL DEFAULT txid_current(),
    at       timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


HandleFn = Callable[[Delivery, UnitOfWork, object], Awaitable[None]]


def make_handle(name: str) -> HandleFn:
    seen: set[uuid.UUID] = set()  # per process: for the "once" behaviours

    async def handle(delivery: Delivery, uow: UnitOfWork, _prepared: object) -> None:
        assert isinstance(delivery.event, OrderDelivered)
        kind, _, arg = delivery.event.carrier.partition(":")
        event_id = delivery.envelope.event_id
        first_time = event_id not in seen
        seen.add(event_id)
        if kind == "slow":
            markers = os.environ.get("BACKBONE_MARKERS")
            if markers:
                Path(markers, f"{name}.{event_id}.started").touch()
            await asyncio.sleep(int(arg) / 1000)
        elif kind == "flaky" and delivery.attempt <= int(arg):
            raise TransientError(f"flaky attempt {delivery.attempt}")
        elif kind == "crash":
            os._exit(3)  # the process dies mid-delivery, every time
        elif kind == "poison":
            raise TransientError("poison")
        elif kind == "bug" or (kind == "bug-once" and first_time):
            raise PermanentError("a bug")
        elif kind == "defer" and first_time:
            raise Defer(int(arg) / 1000)
        await uow.conn.execute(
            "INSERT INTO backbone_applied (event_id, handler, attempt, pid, redelivered) "
            "VALUES ($1, $2, $3, $4, $5)",
            event_id,
            name,
            delivery.attempt,
            os.getpid(),
            delivery.redelivered,
        )

    return handle


def make_prepare(calls: Counter[uuid.UUID]) -> CallFn:
    """A prepare step that counts its calls per event in ``calls`` and reads its behaviour
    from the carrier too: ``call-slow:MS``, ``call-flaky:N`` (transient on the first N
    attempts), ``call-none`` (nothing to do); anything else prepares at once."""

    async def prepare(delivery: Delivery) -> object:
        assert isinstance(delivery.event, OrderDelivered)
        kind, _, arg = delivery.event.carrier.partition(":")
        calls[delivery.envelope.event_id] += 1
        if kind == "call-slow":
            await asyncio.sleep(int(arg) / 1000)
        elif kind == "call-flaky" and delivery.attempt <= int(arg):
            raise TransientError(f"flaky call, attempt {delivery.attempt}")
        elif kind == "call-none":
            return None
        return delivery.event.carrier

    return prepare


def make_registry(
    names: list[str],
    event_types: tuple[str, ...] = (EVENT,),
    *,
    batch: bool = False,
    prepare: CallFn | None = None,
    batch_window_s: float | None = None,
) -> Registry:
    """Test handlers called ``names``, each subscribed to ``event_types``."""
    return Registry(
        _handler(Subscription(n, event_types), make_handle(n), batch, prepare, batch_window_s)
        for n in names
    )


def _handler(
    on: Subscription,
    handle: HandleFn,
    batched: bool,
    call: CallFn | None,
    window_s: float | None,
) -> Handler:
    """A test handler of the kind the arguments ask for, applying ``handle`` per delivery."""
    if call is not None:

        async def record(uow: UnitOfWork, answered: Sequence[tuple[Delivery, object]]) -> None:
            for delivery, answer in answered:
                await handle(delivery, uow, answer)

        return CallStep(on, call=call, record=record, batched=batched, window_s=window_s)

    async def apply(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await handle(delivery, uow, None)

    return TransactionStep(on, apply=apply, batched=batched, window_s=window_s)


class StallingRelay(Relay):
    """A relay that stops dead after the broker confirmed a batch, before marking it."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, marker: Path) -> None:
        super().__init__(settings, pool)
        self.marker = marker

    async def confirmed(self, ids: list[int]) -> None:
        self.marker.write_text(",".join(map(str, ids)))
        await asyncio.sleep(3600)  # the test SIGKILLs us here


async def main(argv: list[str]) -> None:
    settings = Settings()
    pool = await create_pool(settings, min_size=1, max_size=10)
    stop = install_stop_signals()
    try:
        if argv[0] == "worker":
            names = argv[argv.index("--handlers") + 1].split(",")
            await Worker(settings, make_registry(names), pool).run(stop)
        elif "--stall-marker" in argv:
            marker = Path(argv[argv.index("--stall-marker") + 1])
            await StallingRelay(settings, pool, marker).run(stop)
        else:
            await Relay(settings, pool).run(stop)
    finally:
        await pool.close()


if __name__ == "__main__":
    run(main(sys.argv[1:]))
