"""The saga's handlers, driven in-process through the consumer core (see tests/pump.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain.errors import NotFound
from orderflow.domain.events import (
    HAPPY_PATH,
    Envelope,
    Event,
    OrderPrepared,
    OrderShipped,
)
from orderflow.inventory import reservation as inventory
from orderflow.kernel.consumer import Outcome, Prepared, apply, apply_batch, prepare
from orderflow.kernel.handlers import (
    CallStep,
    Delivery,
    PermanentError,
    Registry,
    StatementStep,
    TransactionStep,
)
from orderflow.kernel.uow import unit_of_work
from orderflow.ordering.expiry import expire_unpaid
from orderflow.settings import Settings
from tests.factories import make_customer, make_product, place_order
from tests.integration.saga_support import (
    _captured,
    _caused,
    _lock_orders,
    _money,
    _orders_in,
    _paid,
    _payment_initiated,
    _processed,
    _run,
    _settled_by_webhook,
    _step_until,
    _stock,
)
from tests.pump import pump


@pytest.mark.parametrize("token", ["pm_approve", "pm_flaky", "pm_slow"])
async def test_paid_order_runs_all_eight_steps_to_delivered(
    token: str, client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client, price=1000, stock=5)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 2)], payment_token=token
    )
    done = await _run(client, pool, registry, order)
    if token == "pm_slow":  # the gateway answered "processing": its webhook settles it
        assert done["status"] == "payment_pending"
        await _settled_by_webhook(pool, order["id"])
        done = await _run(client, pool, registry, order)
    assert done["status"] == "delivered"
    assert [t["event"] for t in done["timeline"]] == list(HAPPY_PATH)
    assert await _money(pool, order["id"]) == {"authorize": 2000, "capture": 2000}
    assert await _stock(client, product) == 3


async def test_reserving_several_lines_drops_each_product_from_the_cache(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    products = [await make_product(client, stock=9) for _ in range(3)]
    for product in products:
        assert await _stock(client, product) == 9  # now cached, and placing the order reads them
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(p["id"], i + 1) for i, p in enumerate(products)]
    )
    assert (await _run(client, pool, registry, order))["status"] == "delivered"
    assert [await _stock(client, p) for p in products] == [8, 7, 6]


async def test_declined_then_paid_again_is_delivered(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client, price=700)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token="pm_decline"
    )
    declined = await _run(client, pool, registry, order)
    assert declined["status"] == "awaiting_payment"
    assert declined["timeline"][-1]["event"] == "payment.failed"

    paid = await client.post(
        f"/api/v1/orders/{order['id']}/pay", json={"payment_token": "pm_approve"}
    )
    assert paid.status_code == 200, paid.text
    done = await _run(client, pool, registry, order)
    assert done["status"] == "delivered"
    assert await _money(pool, order["id"]) == {"decline": 700, "authorize": 700, "capture": 700}


async def test_order_without_payment_method_waits_then_pays(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
    )
    waiting = await _run(client, pool, registry, order)
    assert waiting["status"] == "awaiting_payment"
    await client.post(f"/api/v1/orders/{order['id']}/pay", json={"payment_token": "pm_approve"})
    assert (await _run(client, pool, registry, order))["status"] == "delivered"


async def test_paying_a_paid_order_is_a_conflict(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    await _run(client, pool, registry, order)
    again = await client.post(
        f"/api/v1/orders/{order['id']}/pay", json={"payment_token": "pm_approve"}
    )
    assert again.status_code == 409
    total = order["total"]
    assert await _money(pool, order["id"]) == {"authorize": total, "capture": total}


async def test_out_of_stock_order_is_voided_never_captured_and_cancelled_with_stock_unchanged(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    plenty = await make_product(client, price=100, stock=10)
    scarce = await make_product(client, price=300, stock=1)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(plenty["id"], 2), (scarce["id"], 2)]
    )
    done = await _run(client, pool, registry, order)
    assert done["status"] == "cancelled"
    assert done["cancel_reason"] == "out_of_stock"
    events = [t["event"] for t in done["timeline"]]
    assert "inventory.insufficient" in events
    assert "payment.voided" in events
    assert "payment.refunded" not in events
    # The authorization was released: the customer was never charged.
    assert await _money(pool, order["id"]) == {"authorize": 800, "void": 800}
    assert (await _stock(client, plenty), await _stock(client, scarce)) == (10, 1)


async def test_two_orders_racing_for_the_last_unit_exactly_one_gets_it(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client, price=500, stock=1)
    customers = [await make_customer(client) for _ in range(2)]
    orders = [
        await place_order(client, customer_id=c["id"], lines=[(product["id"], 1)])
        for c in customers
    ]
    await asyncio.gather(*(pump(pool, registry, [uuid.UUID(o["id"])]) for o in orders))
    statuses = sorted(
        [(await client.get(f"/api/v1/orders/{o['id']}")).json()["status"] for o in orders]
    )
    assert statuses == ["cancelled", "delivered"]
    assert await _stock(client, product) == 0


STEPS_BEFORE_CANCEL = {
    # status to cancel in: (events to apply first, expected money, stock held before cancel)
    "created": 0,
    "payment_pending": 1,
    "paid": 4,
    "reserved": 5,
    "prepared": 6,
}


@pytest.mark.parametrize("status", sorted(STEPS_BEFORE_CANCEL))
async def test_cancel_at_each_cancellable_state_compensates(
    status: str, client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client, price=400, stock=3)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    oid = uuid.UUID(order["id"])
    await _step_until(pool, registry, oid, status)
    assert (await client.get(f"/api/v1/orders/{oid}")).json()["status"] == status

    cancelled = await client.post(f"/api/v1/orders/{oid}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    done = await _run(client, pool, registry, order)
    assert done["status"] == "cancelled"
    money = await _money(pool, order["id"])
    assert money.get("capture", 0) - money.get("refund", 0) == 0  # nothing kept
    held = money.get("authorize", 0) - money.get("capture", 0) - money.get("void", 0)
    assert held == 0  # nothing held at the gateway
    assert await _stock(client, product) == 3
    if status == "payment_pending":  # the authorization in flight lands after the cancel
        assert money == {"authorize": 400, "void": 400}
        events = [e["event"] for e in done["timeline"]]
        assert "payment.processed" not in events
        assert events[-2:] == ["payment.processed_after_cancel", "payment.voided"]


async def test_shipped_order_cannot_be_cancelled(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    await _step_until(pool, registry, uuid.UUID(order["id"]), "shipped")
    refused = await client.post(f"/api/v1/orders/{order['id']}/cancel")
    assert refused.status_code == 409


async def test_redelivered_events_are_applied_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client, price=900, stock=4)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    await _run(client, pool, registry, order)
    rows = await pool.fetch(
        "SELECT envelope FROM outbox WHERE order_id = $1 ORDER BY id", uuid.UUID(order["id"])
    )
    for row in rows:  # every event delivered a second time, to every handler
        envelope = Envelope.model_validate(row["envelope"])
        for spec in registry.subscribers(envelope.type):
            outcome = await apply(pool, spec, Delivery(envelope, envelope.event(), 1))
            assert outcome is not Outcome.APPLIED, (envelope.type, spec.name)
    assert await _money(pool, order["id"]) == {"authorize": 900, "capture": 900}
    assert await _stock(client, product) == 3


async def test_unpaid_orders_expire_and_are_cancelled(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(
        client, customer_id=customer["id"], lines=[(product["id"], 1)], payment_token=None
    )
    await pool.execute(
        "UPDATE orders SET updated_at = now() - interval '1 hour' WHERE id = $1",
        uuid.UUID(order["id"]),
    )
    assert await expire_unpaid(pool, ttl_s=60) >= 1
    got = (await client.get(f"/api/v1/orders/{order['id']}")).json()
    assert (got["status"], got["cancel_reason"]) == ("cancelled", "payment_expired")


async def test_each_step_notifies_its_recipients_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    await _run(client, pool, registry, order)
    rows = await pool.fetch(
        "SELECT recipient, subject FROM notifications WHERE order_id = $1 ORDER BY id",
        uuid.UUID(order["id"]),
    )
    recipients = [r["recipient"] for r in rows]
    assert recipients == ["customer", "customer", "warehouse", "carrier", "customer", "customer"]


async def test_reservation_batches_lock_stock_in_one_order_and_cannot_deadlock(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    # Two workers' batches: [one on A, one on B] and [one on B, one on A]. Locking product
    # rows order by order, each batch would hold one row the other wants next.
    spec = registry.get("inventory.reserve")
    a, b = [await make_product(client, stock=10) for _ in range(2)]
    customer = await make_customer(client)

    async def paid(product: dict[str, Any]) -> Delivery:
        return await _paid(client, pool, customer, [(product["id"], 1)])

    for _ in range(3):
        first = [await paid(a), await paid(b)]
        second = [await paid(b), await paid(a)]
        outcomes = await asyncio.gather(
            apply_batch(pool, spec, first), apply_batch(pool, spec, second)
        )
        assert list(outcomes) == [[Outcome.APPLIED] * 2] * 2
    assert await _stock(client, a) == await _stock(client, b) == 4


async def test_notifications_claim_and_record_in_one_statement_once_per_event(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    spec = registry.get("notifications.send")
    assert isinstance(spec, StatementStep)
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    order_id = uuid.UUID(order["id"])

    def shipped(n: int) -> Delivery:
        envelope = Envelope.wrap(
            OrderShipped(carrier="c", tracking_number=f"t{n}"), order_id=order_id
        )
        return Delivery(envelope=envelope, event=envelope.event())

    a, b, c = shipped(1), shipped(2), shipped(3)
    assert await apply_batch(pool, spec, [a, a, b]) == [
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.APPLIED,
    ]
    assert await apply(pool, spec, a) == Outcome.DUPLICATE
    # Two workers' overlapping batches: each event is claimed and recorded by one of them.
    first, second = await asyncio.gather(
        apply_batch(pool, spec, [b, c]), apply_batch(pool, spec, [c, b])
    )
    assert first[0] is second[1] is Outcome.DUPLICATE  # b, applied before
    assert sorted([first[1], second[0]]) == [Outcome.APPLIED, Outcome.DUPLICATE]
    rows = await pool.fetch(
        "SELECT n.event_id, count(*) AS n, bool_and(i.event_id IS NOT NULL) AS claimed "
        "FROM notifications n LEFT JOIN inbox i "
        "ON i.event_id = n.event_id AND i.handler = 'notifications.send' "
        "WHERE n.order_id = $1 AND n.subject = 'Your order has shipped' GROUP BY 1",
        order_id,
    )
    events = {d.envelope.event_id for d in (a, b, c)}
    assert {r["event_id"]: (r["n"], r["claimed"]) for r in rows} == dict.fromkeys(events, (1, True))


async def test_status_steps_apply_each_event_once_and_move_each_order_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    spec = registry.get("orders.mark_paid")
    assert isinstance(spec, TransactionStep)
    ids = await _orders_in(client, pool, "payment_pending", 2)
    a, b = _captured(ids[0]), _captured(ids[1])
    assert await apply_batch(pool, spec, [b, a, b]) == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
    ]
    assert await apply_batch(pool, spec, [a]) == [Outcome.DUPLICATE]
    assert await _caused(pool, a) == await _caused(pool, b) == ["order.paid"]
    # Two workers' overlapping batches: each event applied by one of them, each order once.
    more = await _orders_in(client, pool, "payment_pending", 2)
    x, y = _captured(more[0]), _captured(more[1])
    first, second = await asyncio.gather(
        apply_batch(pool, spec, [x, y]), apply_batch(pool, spec, [y, x])
    )
    assert (
        sorted([first[0], second[1]])
        == sorted([first[1], second[0]])
        == [
            Outcome.APPLIED,
            Outcome.DUPLICATE,
        ]
    )
    assert await _caused(pool, x) == await _caused(pool, y) == ["order.paid"]
    statuses = await pool.fetch("SELECT status, version FROM orders WHERE id = ANY($1)", ids)
    assert {(r["status"], r["version"]) for r in statuses} == {("paid", 2)}
    # A second capture event of a paid order is applied without moving it.
    again = _captured(ids[0])
    assert await apply_batch(pool, spec, [again]) == [Outcome.APPLIED]
    assert await _caused(pool, again) == []
    # An event about an order that does not exist is refused (to the dead letters): its batch
    # rolls back, nothing of it is claimed, and applied one by one (as the worker then does)
    # the other delivery is applied and that one refused again.
    missing, c = _captured(uuid.uuid4()), _captured(ids[1])
    with pytest.raises(NotFound):
        await apply_batch(pool, spec, [c, missing])
    claimed = "SELECT count(*) FROM inbox WHERE event_id = ANY($1)"
    assert await pool.fetchval(claimed, [missing.envelope.event_id, c.envelope.event_id]) == 0
    assert await apply(pool, spec, c) is Outcome.APPLIED
    with pytest.raises(NotFound):
        await apply(pool, spec, missing)


async def test_a_status_step_racing_a_cancel_leaves_the_cancelled_order_alone(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    (order_id,) = await _orders_in(client, pool, "payment_pending", 1)
    delivery = _captured(order_id)
    async with pool.acquire() as conn, conn.transaction():
        # A cancel holds the order's lock: the step waits for it ...
        await conn.execute("SELECT 1 FROM orders WHERE id = $1 FOR NO KEY UPDATE", order_id)
        await conn.execute(
            "UPDATE orders SET status = 'cancelled', cancel_reason = 'customer' WHERE id = $1",
            order_id,
        )
        step = asyncio.create_task(apply(pool, registry.get("orders.mark_paid"), delivery))
        await asyncio.sleep(0.3)
        assert not step.done()
    # ... then sees the cancelled row, not the pending one it was delivered for.
    assert await step is Outcome.APPLIED
    assert await pool.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == "cancelled"
    assert await _caused(pool, delivery) == []


async def test_two_steps_of_one_order_in_one_batch_are_applied_in_turn(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    spec = registry.get("autopilot.carrier")
    ids = await _orders_in(client, pool, "prepared", 2)

    def delivery(order_id: uuid.UUID, event: Event) -> Delivery:
        envelope = Envelope.wrap(event, order_id=order_id)
        return Delivery(envelope=envelope, event=envelope.event())

    prepared = OrderPrepared(prepared_by="warehouse")
    shipped = OrderShipped(carrier="c", tracking_number="t")
    first = [delivery(ids[0], prepared), delivery(ids[0], shipped)]
    late = [delivery(ids[1], shipped), delivery(ids[1], prepared)]
    assert await apply_batch(pool, spec, [*first, *late]) == [Outcome.APPLIED] * 4
    statuses = await pool.fetch("SELECT id, status FROM orders WHERE id = ANY($1)", ids)
    # In batch order: prepared -> shipped -> delivered; an order.shipped that comes first
    # finds the order still prepared and leaves it (the order.prepared then ships it).
    assert {r["id"]: r["status"] for r in statuses} == {ids[0]: "delivered", ids[1]: "shipped"}
    assert [await _caused(pool, d) for d in first] == [["order.shipped"], ["order.delivered"]]
    assert [await _caused(pool, d) for d in late] == [[], ["order.shipped"]]


async def test_a_charge_delivered_twice_at_once_is_applied_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    # payments.charge claims its inbox key and locks the order in one statement: the second
    # of two concurrent deliveries waits on the key, then sees it applied.
    spec = registry.get("payments.charge")
    assert isinstance(spec, CallStep)
    assert spec.claim is not None
    order, delivery = await _payment_initiated(client, pool, registry, price=300)
    outcomes = await asyncio.gather(apply(pool, spec, delivery), apply(pool, spec, delivery))
    # The second is a duplicate, or finds the payment settled already before its transaction.
    assert sorted(outcomes)[0] is Outcome.APPLIED
    assert sorted(outcomes)[1] in (Outcome.DUPLICATE, Outcome.NOTHING_TO_DO)
    assert await _money(pool, order["id"]) == {"authorize": 300}
    assert await _processed(pool, order) == 1


async def test_a_charge_whose_payment_was_settled_after_its_gateway_call_records_nothing(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    # record_charges does not read the payment again: the settle itself only moves a payment
    # that is still pending. Here another delivery records the charge between this one's
    # gateway call and its transaction (a relay copy, say, outside the inbox's view).
    spec = registry.get("payments.charge")
    assert isinstance(spec, CallStep)
    order, delivery = await _payment_initiated(client, pool, registry, price=400)
    prepared = await spec.call(delivery)  # the payment, read while pending
    assert prepared is not None
    assert await apply(pool, spec, delivery) == Outcome.APPLIED
    async with unit_of_work(pool) as uow:
        await _lock_orders(uow, [delivery.envelope.order_id])
        await spec.record(uow, [(delivery, prepared)])
    assert not uow.wrote_events
    assert await _money(pool, order["id"]) == {"authorize": 400}
    assert await _processed(pool, order) == 1


async def test_charges_share_one_transaction_and_a_copy_among_them_is_recorded_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    # payments.charge is a batch handler: each delivery's gateway call runs on its own, then
    # the batch records its charges in one transaction. A relay copy in the same batch was
    # charged by the (idempotent) gateway twice, and is recorded once.
    spec = registry.get("payments.charge")
    assert isinstance(spec, CallStep)
    assert spec.batched
    first, delivery = await _payment_initiated(client, pool, registry, price=500)
    second, other = await _payment_initiated(client, pool, registry, price=700)
    batch = [delivery, other, delivery]
    ready = [await prepare(pool, spec, d) for d in batch]
    assert all(isinstance(r, Prepared) for r in ready)
    outcomes = await apply_batch(pool, spec, batch, [r for r in ready if isinstance(r, Prepared)])
    assert outcomes == [Outcome.APPLIED, Outcome.APPLIED, Outcome.DUPLICATE]
    assert await _money(pool, first["id"]) == {"authorize": 500}
    assert await _money(pool, second["id"]) == {"authorize": 700}
    assert [await _processed(pool, o) for o in (first, second)] == [1, 1]
    transactions = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM payment_transactions WHERE order_id = ANY($1)",
        [uuid.UUID(first["id"]), uuid.UUID(second["id"])],
    )
    assert transactions == 1
    # Its copy, delivered again later, finds the payment settled before any transaction.
    assert await prepare(pool, spec, delivery) == Outcome.NOTHING_TO_DO


async def test_new_orders_of_one_batch_get_their_payments_with_one_statement_once(
    client: httpx.AsyncClient, pool: asyncpg.Pool, registry: Registry
) -> None:
    # payments.initiate registers the payments of a batch's new orders with one statement,
    # after its claim locked them; a copy in the batch registers nothing more.
    spec = registry.get("payments.initiate")
    assert isinstance(spec, TransactionStep)
    assert spec.batched
    assert spec.claim is not None
    product = await make_product(client, price=250)
    customer = await make_customer(client)
    ids = []
    for quantity in (1, 2):
        placed = await place_order(
            client, customer_id=customer["id"], lines=[(product["id"], quantity)]
        )
        ids.append(uuid.UUID(placed["id"]))

    async def created(order_id: uuid.UUID) -> Delivery:
        row = await pool.fetchrow(
            "SELECT envelope FROM outbox WHERE order_id = $1 AND event_type = 'order.created'",
            order_id,
        )
        envelope = Envelope.model_validate(row["envelope"])
        return Delivery(envelope=envelope, event=envelope.event())

    a, b = await created(ids[0]), await created(ids[1])
    # An order whose payment method went missing fails the whole batch: nothing stays.
    await pool.execute("UPDATE orders SET payment_token = NULL WHERE id = $1", ids[1])
    with pytest.raises(PermanentError):
        await apply_batch(pool, spec, [a, b])
    assert await pool.fetchval("SELECT count(*) FROM payments WHERE order_id = ANY($1)", ids) == 0
    await pool.execute("UPDATE orders SET payment_token = 'pm_approve' WHERE id = $1", ids[1])
    assert await apply_batch(pool, spec, [b, a, b]) == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
    ]
    payments = await pool.fetch(
        "SELECT id, order_id, attempt, amount, status, xmin::text AS tx FROM payments "
        "WHERE order_id = ANY($1)",
        ids,
    )
    assert sorted((p["order_id"], p["attempt"], p["amount"], p["status"]) for p in payments) == (
        sorted([(ids[0], 1, 250, "pending"), (ids[1], 1, 500, "pending")])
    )
    assert len({p["tx"] for p in payments}) == 1
    initiated = await pool.fetch(
        "SELECT order_id, envelope FROM outbox WHERE order_id = ANY($1) "
        "AND event_type = 'payment.initiated'",
        ids,
    )
    by_order = {p["order_id"]: p["id"] for p in payments}
    assert sorted(
        (r["order_id"], uuid.UUID(r["envelope"]["payload"]["payment_id"])) for r in initiated
    ) == sorted(by_order.items())
    statuses = await pool.fetch("SELECT status FROM orders WHERE id = ANY($1)", ids)
    assert {r["status"] for r in statuses} == {"payment_pending"}


class _CountingCache(RedisProductCache):
    """The real Redis product cache, counting its invalidation round trips."""

    invalidations: list[tuple[uuid.UUID, ...]]

    async def invalidate(self, *product_ids: uuid.UUID) -> None:
        self.invalidations.append(product_ids)
        await super().invalidate(*product_ids)


async def test_a_reservation_batch_drops_all_its_products_from_the_cache_in_one_round_trip(
    client: httpx.AsyncClient, pool: asyncpg.Pool, product_cache: RedisProductCache
) -> None:
    cache = _CountingCache(product_cache._link, ttl_s=60)
    cache.invalidations = []
    [spec, _] = inventory.handlers(cache)
    assert spec.name == "inventory.reserve"
    products = [await make_product(client, stock=5) for _ in range(3)]
    for product in products:
        assert await _stock(client, product) == 5  # cached now
    customer = await make_customer(client)
    deliveries = [
        await _paid(client, pool, customer, lines)
        for lines in ([(products[0]["id"], 1), (products[1]["id"], 2)], [(products[2]["id"], 3)])
    ]
    assert await apply_batch(pool, spec, deliveries) == [Outcome.APPLIED] * 2
    assert [sorted(call) for call in cache.invalidations] == [
        sorted(uuid.UUID(p["id"]) for p in products)
    ]
    assert [await _stock(client, p) for p in products] == [4, 3, 2]


def test_only_an_authorization_on_a_cancelled_order_reaches_compensation(
    registry: Registry,
) -> None:
    # Every order's authorization used to be delivered to compensation.refund too, to find the
    # rare one on a cancelled order: a delivery per order for nothing. That one has its own
    # event now, and payment.processed goes to the step that marks the order paid alone.
    assert [s.name for s in registry.subscribers("payment.processed")] == ["orders.mark_paid"]
    assert [s.name for s in registry.subscribers("payment.processed_after_cancel")] == [
        "compensation.refund"
    ]
    deliveries = sum(len(registry.subscribers(event)) for event in HAPPY_PATH)
    assert deliveries == 14  # inventory.checked also goes to payments.capture


def test_only_the_notifications_linger_for_fuller_batches(
    registry: Registry, settings: Settings
) -> None:
    # No saga step waits for a notification, so only their handler trades latency for batch
    # size (ADR 0019); every step on the order's path applies what it has at once.
    lingering = {s.name: s.window_s for s in registry if s.window_s is not None}
    assert lingering == {"notifications.send": settings.notifications_batch_window_s}
    assert settings.notifications_batch_window_s > 0
