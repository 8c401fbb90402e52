"""A payment gateway simulator, driven by the payment token (see DESIGN.md).

``pm_approve`` succeeds, ``pm_decline`` is declined, ``pm_flaky`` fails transiently on its first
two attempts and then succeeds, ``pm_slow`` succeeds after ``slow_delay_s``. Any other token is
declined. A latency and a random transient failure rate can be added for load runs. Results
are remembered by idempotency key, as a real provider does, for the last ``remember`` keys:
a provider forgets keys after a while too, and a process that remembered every charge grew
for as long as it ran (tracemalloc: the worker's largest growing allocations in a soak).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field
from typing import TypeVar

from orderflow.kernel.handlers import TransientError
from orderflow.payments.gateway import ChargeResult

_T = TypeVar("_T")


class GatewayUnavailable(TransientError):
    """The simulated provider is (pretending to be) down."""


@dataclass
class SimulatedGateway:
    slow_delay_s: float = 1.0
    latency_s: float = 0.0
    failure_rate: float = 0.0
    flaky_failures: int = 2
    # At 250 charges/s, 40 s of history: more than the worker's retry horizon (1 + 2 + 4 +
    # 8 s by default), in about two megabytes (traced: 1.3 MB after 6,000 charges).
    remember: int = 10_000
    _charges: dict[str, ChargeResult] = field(default_factory=dict)
    _refunds: dict[str, str] = field(default_factory=dict)

    def _remember(self, memory: dict[str, _T], key: str, value: _T) -> None:
        memory[key] = value
        while len(memory) > self.remember:
            del memory[next(iter(memory))]  # the oldest key first

    async def _call(self) -> None:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.failure_rate and random.random() < self.failure_rate:
            raise GatewayUnavailable("simulated provider outage")

    async def charge(
        self, *, idempotency_key: str, token: str, amount: int, currency: str, attempt: int
    ) -> ChargeResult:
        """Capture or decline according to the token."""
        if (known := self._charges.get(idempotency_key)) is not None:
            return known
        await self._call()
        if token == "pm_flaky" and attempt <= self.flaky_failures:
            raise GatewayUnavailable(f"pm_flaky: transient failure on attempt {attempt}")
        if token == "pm_slow":
            await asyncio.sleep(self.slow_delay_s)
        if token in {"pm_approve", "pm_flaky", "pm_slow"}:
            result = ChargeResult(captured=True, reference=f"ch_{uuid.uuid4().hex[:20]}")
        elif token == "pm_decline":
            result = ChargeResult(captured=False, decline_reason="card_declined")
        else:
            result = ChargeResult(captured=False, decline_reason="unknown_payment_method")
        self._remember(self._charges, idempotency_key, result)
        return result

    async def refund(
        self, *, idempotency_key: str, reference: str, amount: int, currency: str
    ) -> str:
        """Refund a capture; always succeeds unless the simulated outage hits."""
        if (known := self._refunds.get(idempotency_key)) is not None:
            return known
        await self._call()
        ref = f"re_{uuid.uuid4().hex[:20]}"
        self._remember(self._refunds, idempotency_key, ref)
        return ref
