"""What the payment steps that call the gateway share: a time limit on each call, and the
order a delivery is about."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from orderflow.kernel.handlers import Delivery, TransientError

T = TypeVar("T")


async def within(timeout_s: float, call: Coroutine[Any, Any, T], what: str) -> T:
    """The gateway's answer to ``call``; no answer within ``timeout_s`` is a transient error
    (the delivery is retried, with the same idempotency key)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await call
    except TimeoutError:
        raise TransientError(
            f"payment gateway did not answer the {what} within {timeout_s} s"
        ) from None


def order_id_of(d: Delivery) -> uuid.UUID:
    assert d.envelope.order_id is not None
    return d.envelope.order_id
