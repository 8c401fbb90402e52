from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orderflow.domain.errors import IllegalTransition
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
