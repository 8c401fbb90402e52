"""The provider's operations: authorize (a payment intent), capture, void and refund, each
idempotent under the caller's key for as long as keys are kept. A repeated request answers with
the object's current state (a ``processing`` intent that settled since shows as settled).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from orderflow.gateway import store
from orderflow.gateway.decisions import Outcome, decide, decline_reason

AUTHORIZED = "payment_intent.authorized"


class GatewayError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, detail: str, *, intent: store.Intent | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.intent = intent


class Unavailable(GatewayError):
    status = 503
    code = "unavailable"


class Conflict(GatewayError):
    status = 409
    code = "invalid_state"


class KeyReused(GatewayError):
    status = 422
    code = "idempotency_key_reused"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


@dataclass
class Provider:
    """The simulated provider over its store."""

    pool: asyncpg.Pool
    slow_delay_s: float = 1.0
    latency_s: float = 0.0
    failure_rate: float = 0.0

    async def _idempotent(
        self,
        operation: str,
        key: str,
        request: dict[str, Any],
        act: Callable[[asyncpg.Connection], Awaitable[str | None]],
    ) -> str:
        """Run ``act`` once per (operation, key): the id of the object it made; a later call
        with the same key and request gets the same id, with another request a KeyReused.
        ``act`` answering None made nothing (a transient failure it recorded): Unavailable,
        after its transaction committed, and the key stays free for the retry."""
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.failure_rate and random.random() < self.failure_rate:
            raise Unavailable("simulated provider outage: try again with the same key")
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        async with self.pool.acquire() as conn, conn.transaction():
            await store.lock_key(conn, operation, key)
            if (known := await store.remembered(conn, operation, key)) is not None:
                if known[0] != digest:
                    raise KeyReused(f"the key {key!r} was used for another {operation} request")
                return known[1]
            object_id = await act(conn)
            if object_id is not None:
                await store.remember(conn, operation, key, digest, object_id)
        if object_id is None:
            raise Unavailable(f"transient failure of the {operation}: try again with the same key")
        return object_id

    async def authorize(
        self,
        *,
        key: str,
        amount: int,
        currency: str,
        payment_method: str,
        metadata: dict[str, Any],
    ) -> store.Intent:
        """Create a payment intent and authorize it (capture comes later)."""
        request = {"amount": amount, "currency": currency, "pm": payment_method, "m": metadata}

        async def act(conn: asyncpg.Connection) -> str | None:
            outcome = decide(payment_method, failures_so_far=await store.failures(conn, key))
            if outcome is Outcome.UNAVAILABLE:
                await store.count_failure(conn, key)
                return None
            status, reason = {
                Outcome.AUTHORIZE: ("requires_capture", None),
                Outcome.LATER: ("processing", None),
                Outcome.DECLINE: ("declined", decline_reason(payment_method)),
            }[outcome]
            intent = await store.insert_intent(
                conn,
                amount=amount,
                currency=currency,
                payment_method=payment_method,
                status=status,
                decline_reason=reason,
                metadata=metadata,
            )
            if outcome is Outcome.LATER:
                await store.schedule_webhook(
                    conn, type_=AUTHORIZED, intent_id=intent.id, delay_s=self.slow_delay_s
                )
            else:
                kind = "authorize" if outcome is Outcome.AUTHORIZE else "decline"
                await store.record(conn, intent, kind=kind, key=key)
            return intent.id

        return await self.intent(await self._idempotent("authorize", key, request, act))

    async def intent(self, intent_id: str) -> store.Intent:
        intent = await store.get_intent(self.pool, intent_id)
        if intent is None:
            raise NotFound(f"no payment intent {intent_id}")
        return intent

    async def capture(self, *, key: str, intent_id: str) -> store.Intent:
        """Capture an authorized intent in full; capturing a captured one changes nothing."""

        async def act(conn: asyncpg.Connection) -> str:
            intent = await self._locked(conn, intent_id)
            if intent.status == "requires_capture":
                await store.move(
                    conn,
                    intent,
                    status="captured",
                    kind="capture",
                    key=key,
                    captured=intent.amount,
                )
            elif intent.status not in {"captured", "refunded"}:
                raise Conflict(f"cannot capture a {intent.status} payment intent", intent=intent)
            return intent.id

        return await self.intent(await self._idempotent("capture", key, {"i": intent_id}, act))

    async def void(self, *, key: str, intent_id: str) -> store.Intent:
        """Release an authorization that was not captured."""

        async def act(conn: asyncpg.Connection) -> str:
            intent = await self._locked(conn, intent_id)
            if intent.status in {"requires_capture", "processing"}:
                await store.move(conn, intent, status="voided", kind="void", key=key)
            elif intent.status != "voided":
                raise Conflict(f"cannot void a {intent.status} payment intent", intent=intent)
            return intent.id

        return await self.intent(await self._idempotent("void", key, {"i": intent_id}, act))

    async def refund(self, *, key: str, intent_id: str) -> dict[str, Any]:
        """Refund a captured intent in full, once."""

        async def act(conn: asyncpg.Connection) -> str:
            intent = await self._locked(conn, intent_id)
            if intent.status != "captured":
                raise Conflict(f"cannot refund a {intent.status} payment intent", intent=intent)
            refund_id = await store.insert_refund(conn, intent)
            await store.move(
                conn, intent, status="refunded", kind="refund", key=key, refunded=intent.amount
            )
            return refund_id

        refund_id = await self._idempotent("refund", key, {"i": intent_id}, act)
        async with self.pool.acquire() as conn:
            refund = await store.get_refund(conn, refund_id)
        assert refund is not None
        return refund

    async def _locked(self, conn: asyncpg.Connection, intent_id: str) -> store.Intent:
        intent = await store.get_intent(conn, intent_id, lock=True)
        if intent is None:
            raise NotFound(f"no payment intent {intent_id}")
        return intent
