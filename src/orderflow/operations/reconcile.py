"""The reconciler: an accepted order reaches a terminal state whatever the broker lost.

Each saga step is caused by the order's last event. If a copy of that event was lost on its
way (a broker that lost a waiting retry, an operator who purged a queue), nothing would ever
move the order again. ``reconcile`` finds orders that made no progress for longer than their
step allows and re-drives each from its last event with the back office's re-drive
(``operations.redrive.republish_event``): the event is published again, and every handler that
has applied it already skips it by its inbox, so a re-drive is always safe.
"""

from __future__ import annotations

import asyncpg
import structlog

from orderflow.domain.errors import NotFound
from orderflow.domain.orders import OrderStatus as S
from orderflow.operations import stalled_store as stalled
from orderflow.operations.redrive import republish_event
from orderflow.operations.stalled_store import Stalled
from orderflow.settings import Settings

log = structlog.get_logger(__name__)

# Statuses a handler moves on by itself. awaiting_payment waits for the customer (the expiry
# sweep cancels it); the warehouse and carrier steps wait for people unless the autopilot
# runs them.
MACHINE_STEPS = (S.CREATED, S.PAYMENT_PENDING, S.PAID)
AUTOPILOT_STEPS = (S.RESERVED, S.PREPARED, S.SHIPPED)
# A cancelled order owes a refund or a stock release only briefly; older ones are not read.
COMPENSATION_WINDOW_S = 3600.0


def stall_allowance_s(settings: Settings, status: S) -> float:
    """How long an order may rest in ``status`` before it counts as stuck."""
    if status in AUTOPILOT_STEPS:
        return settings.reconcile_stall_s + settings.autopilot_delay_s
    return settings.reconcile_stall_s


async def reconcile(pool: asyncpg.Pool, settings: Settings, *, limit: int = 500) -> list[Stalled]:
    """One pass: re-drive the orders stuck longer than their step allows; what was re-driven."""
    steps = MACHINE_STEPS + (AUTOPILOT_STEPS if settings.autopilot else ())
    found = await stalled.stalled_orders(
        pool,
        allowances={s.value: stall_allowance_s(settings, s) for s in steps},
        compensation_stall_s=settings.reconcile_stall_s,
        compensation_window_s=COMPENSATION_WINDOW_S,
        limit=limit,
    )
    redriven = []
    for order in found:
        try:
            await republish_event(pool, event_id=order.event_id)
        except NotFound:  # pruned meanwhile: the audit reports the order
            continue
        log.warning(
            "order_redriven",
            order_id=str(order.order_id),
            event_id=str(order.event_id),
            event_type=order.event_type,
        )
        redriven.append(order)
    return redriven
