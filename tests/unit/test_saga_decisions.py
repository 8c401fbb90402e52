"""The saga's decisions as pure functions: which event a charge makes, what a reservation
lacks, who hears of what, and which step receives which event. No service is needed."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import pytest

from orderflow.domain import events as ev
from orderflow.domain import saga
from orderflow.domain.orders import TRANSITIONS, OrderStatus, next_status
from orderflow.fulfilment.steps import CARRIER, WAREHOUSE
from orderflow.gateway.decisions import Outcome, decide
from orderflow.inventory.reservation import shortages_of
from orderflow.inventory.store import Line
from orderflow.kernel.handlers import Delivery
from orderflow.notifications.steps import notifications_for
from orderflow.ordering.transitions import Step
from orderflow.payments.gateway import Authorization, AuthorizationStatus
from orderflow.payments.steps import MARK_PAID, Record, authorization_event
from orderflow.payments.store import Payment

S = OrderStatus
PAYMENT = Payment(
    id=uuid.uuid4(),
    order_id=uuid.uuid4(),
    attempt=1,
    payment_token="pm_approve",
    amount=1250,
    currency="EUR",
    status="pending",
    gateway_reference=None,
)
AUTHORIZED = Authorization(AuthorizationStatus.AUTHORIZED, reference="pi_1")
DECLINED = Authorization(AuthorizationStatus.DECLINED, "pi_2", decline_reason="card_declined")


def test_an_authorization_of_a_pending_order_is_payment_processed_on_its_timeline() -> None:
    event, record = authorization_event(S.PAYMENT_PENDING, PAYMENT, AUTHORIZED)
    assert type(event) is ev.PaymentProcessed
    assert (event.payment_id, event.amount, event.currency) == (PAYMENT.id, 1250, "EUR")
    assert event.gateway_reference == "pi_1"
    assert record is Record.ANNOTATE


def test_an_authorization_of_an_order_cancelled_meanwhile_has_its_own_event_to_void_it() -> None:
    event, record = authorization_event(S.CANCELLED, PAYMENT, AUTHORIZED)
    assert type(event) is ev.PaymentProcessedAfterCancel
    assert record is Record.ANNOTATE
    assert event.TYPE in saga.COMPENSATION_REFUND.event_types
    assert event.TYPE not in saga.ORDERS_MARK_PAID.event_types


def test_a_decline_moves_a_pending_order_and_only_announces_one_that_moved_on() -> None:
    event, record = authorization_event(S.PAYMENT_PENDING, PAYMENT, DECLINED)
    assert isinstance(event, ev.PaymentFailed)
    assert event.reason == "card_declined"
    assert record is Record.ADVANCE
    assert next_status(S.PAYMENT_PENDING, event.TYPE) is S.AWAITING_PAYMENT
    _, record = authorization_event(S.CANCELLED, PAYMENT, DECLINED)
    assert record is Record.PUBLISH


def _line(product: uuid.UUID, requested: int, order: uuid.UUID | None = None) -> Line:
    return Line(
        order_id=order or uuid.uuid4(), product_id=product, requested=requested, available=0
    )


def test_an_order_the_stock_can_fill_lacks_nothing() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert shortages_of([_line(a, 3), _line(b, 1)], {a: 3, b: 5}) == []


def test_each_line_the_stock_left_cannot_fill_is_a_shortage_with_what_was_left() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    shortages = shortages_of([_line(a, 4), _line(b, 1)], {a: 3, b: 1})
    assert shortages == [ev.Shortage(product_id=a, requested=4, available=3)]


def _delivery(event: ev.Event) -> Delivery:
    envelope = ev.Envelope.wrap(event, order_id=uuid.uuid4())
    return Delivery(envelope=envelope, event=event)


def test_each_notifying_event_notifies_its_recipients_once_each() -> None:
    paid = _delivery(ev.OrderPaid(payment_id=uuid.uuid4(), amount=100, currency="EUR"))
    [notice] = notifications_for(paid)
    assert notice.recipient == "customer"
    assert notice.key == f"{paid.envelope.event_id}:customer"
    short = ev.InventoryInsufficient(
        shortages=[ev.Shortage(product_id=uuid.uuid4(), requested=2, available=1)]
    )
    assert [n.recipient for n in notifications_for(_delivery(short))] == ["supplier"]


def test_an_event_nobody_is_told_of_makes_no_notification() -> None:
    initiated = ev.PaymentInitiated(payment_id=uuid.uuid4(), attempt=1, amount=1, currency="EUR")
    assert initiated.TYPE not in saga.RECIPIENTS
    assert notifications_for(_delivery(initiated)) == []


@pytest.mark.parametrize("autopilot", [False, True])
def test_every_event_type_reaches_some_step_and_step_names_are_unique(autopilot: bool) -> None:
    # The relay treats an event no queue is bound to as an error.
    steps = saga.subscriptions(autopilot=autopilot)
    assert len({s.name for s in steps}) == len(steps)
    subscribed = {t for s in steps for t in s.event_types}
    assert set(ev.EVENT_TYPES) <= subscribed
    assert subscribed <= set(ev.EVENT_TYPES)


def test_a_delivered_order_costs_fourteen_deliveries() -> None:
    # The eight events, each to its step and to notifications where someone is told, plus
    # the capture that inventory.checked triggers.
    steps = saga.subscriptions(autopilot=True)
    assert sum(1 for t in ev.HAPPY_PATH for s in steps if t in s.event_types) == 14


def test_the_payment_is_captured_once_stock_is_reserved_and_released_on_cancellation() -> None:
    assert saga.PAYMENTS_CAPTURE.event_types == (ev.InventoryChecked.TYPE,)
    assert ev.OrderCancelled.TYPE in saga.COMPENSATION_REFUND.event_types
    assert ev.InventoryInsufficient.TYPE not in saga.PAYMENTS_CAPTURE.event_types


@pytest.mark.parametrize(
    ("token", "failures", "outcome"),
    [
        ("pm_approve", 0, Outcome.AUTHORIZE),
        ("pm_decline", 0, Outcome.DECLINE),
        ("pm_unknown", 0, Outcome.DECLINE),
        ("pm_flaky", 0, Outcome.UNAVAILABLE),
        ("pm_flaky", 1, Outcome.UNAVAILABLE),
        ("pm_flaky", 2, Outcome.AUTHORIZE),
        ("pm_slow", 0, Outcome.LATER),
    ],
)
def test_the_gateway_decides_by_token_and_by_the_failures_under_one_key(
    token: str, failures: int, outcome: Outcome
) -> None:
    assert decide(token, failures_so_far=failures) is outcome


@pytest.mark.parametrize(
    ("subscription", "table"),
    [
        (saga.ORDERS_MARK_PAID, MARK_PAID),
        (saga.AUTOPILOT_WAREHOUSE, WAREHOUSE),
        (saga.AUTOPILOT_CARRIER, CARRIER),
    ],
)
def test_every_status_step_takes_an_edge_the_state_machine_has(
    subscription: saga.Subscription, table: Mapping[str, Step]
) -> None:
    assert set(table) == set(subscription.event_types)
    for event_type, step in table.items():
        cause = ev.EVENT_TYPES[event_type]
        assert step.expected in TRANSITIONS
        made = step.event(_delivery(_example(cause)))
        assert next_status(step.expected, made.TYPE) is not None


def _example(cls: type[ev.Event]) -> ev.Event:
    """An instance of an event class the status tables follow."""
    examples: dict[type[ev.Event], ev.Event] = {
        ev.PaymentProcessed: ev.PaymentProcessed(
            payment_id=uuid.uuid4(), amount=1, currency="EUR", gateway_reference="ch"
        ),
        ev.InventoryChecked: ev.InventoryChecked(reservations=[]),
        ev.OrderPrepared: ev.OrderPrepared(prepared_by="w"),
        ev.OrderShipped: ev.OrderShipped(carrier="c", tracking_number="t"),
    }
    return examples[cls]
