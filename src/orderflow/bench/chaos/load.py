"""The chaos load: orders placed at a steady rate (open loop) whatever the system does, each
with an Idempotency-Key, in a mix that walks every branch of the saga.

Most orders pay at once (``pm_approve``, ``pm_flaky``, ``pm_slow``); some are declined and then
paid again or cancelled by their customer; some are cancelled shortly after they are placed
(the authorization voided), some once they are captured and before they ship (refunded); some
ask for more of a scarce product than is left (cancelled short of stock, the authorization
voided). A placement left without an answer (indeterminate) is replayed with its key once the
faults are over: the replay says whether the order exists, and creates it if it did not.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from orderflow.bench.chaos.client import Call, Client, Outcome, Request
from orderflow.bench.place import Catalogue

TERMINAL = frozenset({"delivered", "cancelled"})
ORDERS = "/api/v1/orders"
DECLINED = "pm_decline"
# (weight, payment token, what the customer does afterwards)
MIX: tuple[tuple[int, str, str], ...] = (
    (45, "pm_approve", ""),
    (15, "pm_flaky", ""),
    (5, "pm_slow", ""),
    (10, DECLINED, "pay_again"),
    (10, DECLINED, "cancel"),
    (8, "pm_approve", "cancel"),
    (7, "pm_approve", "cancel_charged"),
)
CHARGED = frozenset({"reserved", "prepared"})  # captured, not shipped: a cancel refunds
SCARCE_SHARE = 0.1  # orders that also ask for two units of a scarce product


@dataclass(frozen=True, slots=True)
class Plan:
    """One order to place: its body and what its customer does after the answer."""

    body: dict[str, Any]
    then: str  # "" | "pay_again" | "cancel"

    @property
    def declined(self) -> bool:
        """Whether it is placed with a token the gateway declines."""
        return bool(self.body["payment_token"] == DECLINED)


@dataclass
class Placement:
    """An order's placement: its key, every call made for it, the id once accepted."""

    plan: Plan
    key: str
    calls: list[Call] = field(default_factory=list)
    order_id: str | None = None
    accepted_by: str = ""  # "answer" | "replay" | "" (not accepted)

    @property
    def first(self) -> Call:
        """The placement's own request."""
        return self.calls[0]


def plans(catalogue: Catalogue, scarce: list[uuid.UUID], *, seed: int) -> list[Plan]:
    """A deterministic sequence of 10,000 order plans in the ``MIX``."""
    rng = random.Random(seed)
    weights = [w for w, _, _ in MIX]
    out = []
    for _ in range(10_000):
        _, token, then = rng.choices(MIX, weights)[0]
        chosen = rng.sample(catalogue.products, rng.randint(1, 3))
        lines = [{"product_id": str(p), "quantity": rng.randint(1, 2)} for p in chosen]
        if scarce and rng.random() < SCARCE_SHARE:
            lines.append({"product_id": str(rng.choice(scarce)), "quantity": 2})
        body = {
            "customer_id": str(rng.choice(catalogue.customers)),
            "lines": lines,
            "payment_token": token,
        }
        out.append(Plan(body, then))
    return out


class Load:
    """Places ``plans`` in turn at a rate; follows each order up as its customer would."""

    def __init__(self, client: Client, plans: list[Plan], *, seed: int = 11) -> None:
        self.client = client
        self.plans = plans
        self.placements: list[Placement] = []
        self.calls: list[Call] = []
        self.until = float("inf")  # wall clock: placements stop then (the run may extend it)
        self.followups_until = float("inf")  # wall clock; set when the run knows its end
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self.not_sent = 0  # placements skipped because the client fell a second behind
        self._unanswered = 0  # placements waiting for their own answer
        self._all_answered = asyncio.Event()
        self._all_answered.set()

    # --- what was seen ---

    def counts(self) -> Counter[str]:
        """Calls so far by ``kind:outcome``."""
        return Counter(f"{c.kind}:{c.outcome.value}" for c in self.calls)

    def accepted(self) -> list[str]:
        """Ids of the orders whose placement (or its replay) was answered 2xx."""
        return [p.order_id for p in self.placements if p.order_id]

    @property
    def pending(self) -> int:
        """Placements and follow-ups still running."""
        return len(self._tasks)

    def unresolved(self) -> list[Placement]:
        """Placements with no definite answer yet (not even from a replay)."""
        return [
            p for p in self.placements if p.calls and p.calls[-1].outcome is Outcome.INDETERMINATE
        ]

    # --- driving ---

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, *, rate: float) -> None:
        """Place an order every ``1/rate`` seconds until the wall clock reaches ``self.until``
        (which may move while it runs)."""
        started, n = time.monotonic(), 0
        while True:
            due = started + n / rate
            if time.time() + (due - time.monotonic()) >= self.until:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if time.monotonic() - due > 1.0:  # the client fell behind: no catching up in bursts
                self.not_sent += 1
                n += 1
                continue
            placement = Placement(self.plans[n % len(self.plans)], str(uuid.uuid4()))
            self.placements.append(placement)
            self._unanswered += 1
            self._all_answered.clear()
            self._spawn(self._place(placement))
            n += 1

    async def _send(self, p: Placement, request: Request) -> Call:
        call = await self.client.send(request)
        p.calls.append(call)
        self.calls.append(call)
        return call

    async def _place(self, p: Placement, kind: str = "place") -> None:
        call = await self._send(p, Request(kind, "POST", ORDERS, p.plan.body, p.key))
        if kind == "place":
            self._unanswered -= 1
            if not self._unanswered:
                self._all_answered.set()
        if call.outcome is Outcome.OK and call.body is not None:
            p.order_id = str(call.body["id"])
            p.accepted_by = "answer" if kind == "place" else "replay"
            await self._follow_up(p)

    async def _follow_up(self, p: Placement) -> None:
        if p.plan.then == "cancel" and not p.plan.declined:
            await asyncio.sleep(self._rng.uniform(0.2, 2.0))
            await self._act(p, "cancel", None)
        elif p.plan.then == "cancel_charged":
            await self._cancel_charged(p)
        elif p.plan.then:
            await self._after_decline(p)

    async def _status(self, p: Placement) -> str | None:
        """The order's status as its customer reads it; None without an answer."""
        read = await self._send(p, Request("read", "GET", f"{ORDERS}/{p.order_id}"))
        return (read.body or {}).get("status") if read.outcome is Outcome.OK else None

    async def _cancel_charged(self, p: Placement) -> None:
        """Cancel the order once it is captured and before it ships (a refund)."""
        while time.time() < self.followups_until:
            status = await self._status(p)
            if status in TERMINAL or status == "shipped":
                return
            if status in CHARGED:
                await self._act(p, "cancel", None)
                return
            await asyncio.sleep(0.1)

    async def _after_decline(self, p: Placement) -> None:
        """Wait until the order awaits payment again, then pay again or cancel it."""
        body = {"payment_token": "pm_approve"} if p.plan.then == "pay_again" else None
        kind = "pay" if p.plan.then == "pay_again" else "cancel"
        while time.time() < self.followups_until:
            status = await self._status(p)
            if status in TERMINAL:
                return
            if status == "awaiting_payment" and await self._act(p, kind, body):
                return
            await asyncio.sleep(0.5)

    async def _act(self, p: Placement, kind: str, body: dict[str, Any] | None) -> bool:
        """POST ``/{id}/{kind}`` with one key until answered; whether it was done (2xx).

        No answer, a 5xx or a 429 is retried with the same key; any other 4xx is the
        definite refusal of a customer who came too late (the order moved on)."""
        request = Request(kind, "POST", f"{ORDERS}/{p.order_id}/{kind}", body, str(uuid.uuid4()))
        while time.time() < self.followups_until:
            call = await self._send(p, request)
            if call.outcome is Outcome.OK:
                return True
            status = call.status or 0
            if call.outcome is Outcome.FAILED and status < 500 and status != 429:
                return False
            await asyncio.sleep(1.0)
        return False

    async def resolve(self, *, until: float) -> None:
        """Replay every unanswered placement with its key until it is answered (or ``until``),
        once every placement has had its own answer or timed out."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_answered.wait(), max(0.0, until - time.time()))
        while (pending := self.unresolved()) and time.time() < until:
            await asyncio.gather(*(self._place(p, "replay") for p in pending))
            if self.unresolved():
                await asyncio.sleep(1.0)

    async def drain(self, *, until: float) -> int:
        """Wait for the follow-ups still running (at most until ``until``); cancel the rest
        and return how many were cancelled."""
        left = max(0.0, until - time.time())
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=left)
        late = list(self._tasks)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)
