"""The order state machine: its legal moves, the illegal ones, and what a refusal says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderflow.domain.errors import Conflict, IllegalTransition
from orderflow.domain.events import EVENT_TYPES, HAPPY_PATH
from orderflow.domain.orders import (
    CANCELLABLE,
    TERMINAL,
    TRANSITIONS,
    OrderStatus,
    can_take,
    initial_status,
    next_status,
)

ALL_EVENTS = sorted(EVENT_TYPES)


def test_happy_path_walks_from_created_to_delivered() -> None:
    status = initial_status(has_payment_method=True)
    for event in HAPPY_PATH[1:]:
        if can_take(status, event):
            status = next_status(status, event)
    assert status is OrderStatus.DELIVERED


def test_order_without_payment_method_awaits_payment() -> None:
    assert initial_status(has_payment_method=False) is OrderStatus.AWAITING_PAYMENT


def test_terminal_states_are_delivered_and_cancelled() -> None:
    assert {OrderStatus.DELIVERED, OrderStatus.CANCELLED} == TERMINAL


def test_shipped_and_later_orders_cannot_be_cancelled() -> None:
    assert OrderStatus.SHIPPED not in CANCELLABLE
    with pytest.raises(IllegalTransition):
        next_status(OrderStatus.SHIPPED, "order.cancelled")
    with pytest.raises(IllegalTransition):
        next_status(OrderStatus.DELIVERED, "order.cancelled")


def test_declined_payment_returns_order_to_awaiting_payment() -> None:
    assert next_status(OrderStatus.PAYMENT_PENDING, "payment.failed") is (
        OrderStatus.AWAITING_PAYMENT
    )


def test_every_transition_names_a_known_event() -> None:
    for edges in TRANSITIONS.values():
        assert set(edges) <= set(EVENT_TYPES)


def test_every_status_is_reachable_from_an_initial_status() -> None:
    seen = {initial_status(has_payment_method=True), initial_status(has_payment_method=False)}
    frontier = list(seen)
    while frontier:
        for target in TRANSITIONS[frontier.pop()].values():
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(OrderStatus)


@given(st.lists(st.sampled_from(ALL_EVENTS), max_size=30), st.booleans())
def test_random_event_sequences_only_follow_defined_edges(events: list[str], paid: bool) -> None:
    status = initial_status(has_payment_method=paid)
    for event in events:
        if event in TRANSITIONS[status]:
            new = next_status(status, event)
            assert new is TRANSITIONS[status][event]
            status = new
        else:
            with pytest.raises(IllegalTransition):
                next_status(status, event)
    if status in TERMINAL:
        assert all(not can_take(status, e) for e in ALL_EVENTS)


# Each move the saga or the back office makes, written out once more by hand: a changed edge
# in TRANSITIONS fails here, not only in the integration tests that happen to walk it.
LEGAL = [
    (OrderStatus.CREATED, "payment.initiated", OrderStatus.PAYMENT_PENDING),
    (OrderStatus.AWAITING_PAYMENT, "payment.initiated", OrderStatus.PAYMENT_PENDING),
    (OrderStatus.PAYMENT_PENDING, "order.paid", OrderStatus.PAID),
    (OrderStatus.PAYMENT_PENDING, "payment.failed", OrderStatus.AWAITING_PAYMENT),
    (OrderStatus.PAID, "inventory.checked", OrderStatus.RESERVED),
    (OrderStatus.RESERVED, "order.prepared", OrderStatus.PREPARED),
    (OrderStatus.PREPARED, "order.shipped", OrderStatus.SHIPPED),
    (OrderStatus.SHIPPED, "order.delivered", OrderStatus.DELIVERED),
]

ILLEGAL = [
    (OrderStatus.CREATED, "order.paid"),  # paid without a charge
    (OrderStatus.AWAITING_PAYMENT, "order.paid"),
    (OrderStatus.PAYMENT_PENDING, "payment.initiated"),  # a second charge in flight
    (OrderStatus.PAYMENT_PENDING, "inventory.checked"),  # stock before the money
    (OrderStatus.PAID, "payment.failed"),  # a late decline cannot unpay an order
    (OrderStatus.PAID, "order.shipped"),  # shipped before it was reserved and prepared
    (OrderStatus.RESERVED, "order.shipped"),  # shipped before it was prepared
    (OrderStatus.RESERVED, "inventory.checked"),  # stock taken twice
    (OrderStatus.CREATED, "order.delivered"),
    (OrderStatus.SHIPPED, "order.cancelled"),  # the parcel has left
    (OrderStatus.DELIVERED, "order.cancelled"),
    (OrderStatus.CANCELLED, "order.cancelled"),  # cancelled twice
    (OrderStatus.CANCELLED, "payment.initiated"),  # a cancelled order is never charged
    (OrderStatus.CANCELLED, "inventory.checked"),
]


@pytest.mark.parametrize(("current", "event", "expected"), LEGAL)
def test_each_step_of_the_lifecycle_moves_to_its_next_status(
    current: OrderStatus, event: str, expected: OrderStatus
) -> None:
    assert can_take(current, event)
    assert next_status(current, event) is expected


@pytest.mark.parametrize(("current", "event"), ILLEGAL)
def test_an_illegal_move_is_refused_with_the_status_and_event_it_names(
    current: OrderStatus, event: str
) -> None:
    assert not can_take(current, event)
    with pytest.raises(IllegalTransition) as refused:
        next_status(current, event)
    assert refused.value.extra == {"current_status": current.value, "event": event}
    assert repr(current.value) in refused.value.detail
    assert repr(event) in refused.value.detail


def test_the_refusal_lists_the_moves_that_are_allowed_instead() -> None:
    allowed = r"allowed: order\.cancelled, order\.paid, payment\.failed$"
    with pytest.raises(IllegalTransition, match=allowed):
        next_status(OrderStatus.PAYMENT_PENDING, "order.shipped")
    with pytest.raises(IllegalTransition, match=r"allowed: none \(terminal\)"):
        next_status(OrderStatus.DELIVERED, "order.shipped")


def test_an_illegal_transition_is_a_conflict_for_the_api() -> None:
    assert issubclass(IllegalTransition, Conflict)
    assert IllegalTransition.code == "illegal-transition"


def test_every_status_before_shipping_can_be_cancelled() -> None:
    assert {
        OrderStatus.CREATED,
        OrderStatus.AWAITING_PAYMENT,
        OrderStatus.PAYMENT_PENDING,
        OrderStatus.PAID,
        OrderStatus.RESERVED,
        OrderStatus.PREPARED,
    } == CANCELLABLE
    for status in CANCELLABLE:
        assert next_status(status, "order.cancelled") is OrderStatus.CANCELLED


def test_events_that_report_rather_than_decide_move_no_order() -> None:
    # The charge's outcome, stock shortages, releases and refunds are followed by the event
    # that moves the order (order.paid, order.cancelled); they never move it themselves.
    reports = {
        "order.created",
        "payment.processed",
        "payment.processed_after_cancel",
        "inventory.insufficient",
        "inventory.released",
        "payment.refunded",
    }
    for status in OrderStatus:
        assert not any(can_take(status, event) for event in reports), status


def test_a_declined_payment_can_be_tried_again_and_then_paid() -> None:
    status = initial_status(has_payment_method=True)
    for event in ("payment.initiated", "payment.failed", "payment.initiated", "order.paid"):
        status = next_status(status, event)
    assert status is OrderStatus.PAID
