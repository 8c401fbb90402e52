"""Service levels: how long an order may stay in each status before someone should look.

An order past its status's deadline is *overdue*: not broken, but late enough that the shop
wants to know (a payment that never came back, a parcel nobody prepared). The deadlines are the
defaults a small web shop would choose; ``ORDERFLOW_SLA_DEADLINES_S`` overrides any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from orderflow.domain.orders import TERMINAL, TRANSITIONS, OrderStatus

S = OrderStatus
MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR

DEFAULT_DEADLINES_S: Final = MappingProxyType(
    {
        # Automated steps: seconds when healthy, so minutes late means something is wrong.
        S.CREATED.value: 10 * MINUTE,
        S.PAYMENT_PENDING.value: 15 * MINUTE,
        S.PAID.value: 15 * MINUTE,
        # The customer's turn: the expiry sweep cancels after the unpaid-order TTL (30 min by
        # default), so an order still awaiting payment after an hour means the sweep is not.
        S.AWAITING_PAYMENT.value: HOUR,
        # People: the warehouse prepares and the carrier collects within a working day;
        # the carrier delivers within a week.
        S.RESERVED.value: DAY,
        S.PREPARED.value: DAY,
        S.SHIPPED.value: 7 * DAY,
    }
)
# A status that the lifecycle gains later and the table above does not know yet.
FALLBACK_DEADLINE_S: Final = HOUR


def deadlines(overrides: Mapping[str, float] | None = None) -> dict[str, float]:
    """Every non-terminal status's deadline in seconds: the defaults with ``overrides``."""
    open_statuses = [s.value for s in TRANSITIONS if s not in TERMINAL]
    merged = {s: DEFAULT_DEADLINES_S.get(s, FALLBACK_DEADLINE_S) for s in open_statuses}
    for status, seconds in (overrides or {}).items():
        if status not in merged:
            raise ValueError(
                f"no deadline for {status!r}: the statuses that have one are {sorted(merged)}"
            )
        if seconds <= 0:
            raise ValueError(f"the deadline of {status!r} must be > 0 seconds, not {seconds}")
        merged[status] = float(seconds)
    return merged
