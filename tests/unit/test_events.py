"""Event envelopes: what they carry, how a caused event follows its cause, what is refused."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pydantic import ValidationError

from orderflow.domain.events import (
    EVENT_TYPES,
    HAPPY_PATH,
    Envelope,
    Line,
    OrderCancelled,
    OrderPlaced,
    PaymentFailed,
    UnknownEventType,
)


def test_the_eight_spec_events_all_have_models() -> None:
    assert len(HAPPY_PATH) == 8
    assert set(HAPPY_PATH) <= set(EVENT_TYPES)


def test_envelope_round_trips_through_json() -> None:
    order_id = uuid.uuid4()
    envelope = Envelope.wrap(
        OrderCancelled(reason="customer_request", previous_status="paid"),
        order_id=order_id,
        actor="customer",
    )
    again = Envelope.model_validate_json(envelope.model_dump_json())
    assert again == envelope
    assert again.event() == OrderCancelled(reason="customer_request", previous_status="paid")


def test_follow_keeps_conversation_and_records_cause() -> None:
    first = Envelope.wrap(OrderCancelled(reason="x", previous_status="paid"), order_id=uuid.uuid4())
    second = first.follow(OrderCancelled(reason="y", previous_status="paid"))
    assert second.correlation_id == first.correlation_id == first.event_id
    assert second.causation_id == first.event_id
    assert second.order_id == first.order_id


def test_unknown_event_type_is_reported() -> None:
    envelope = Envelope.wrap(OrderCancelled(reason="x", previous_status="paid"), order_id=None)
    forged = envelope.model_copy(update={"type": "order.teleported"})
    with pytest.raises(UnknownEventType):
        forged.event()


def test_payload_that_does_not_match_its_type_is_rejected() -> None:
    envelope = Envelope.wrap(OrderCancelled(reason="x", previous_status="paid"), order_id=None)
    forged = envelope.model_copy(update={"type": OrderPlaced.TYPE})
    with pytest.raises(ValidationError):
        forged.event()


def test_every_event_type_publishes_a_json_schema() -> None:
    for name, model in EVENT_TYPES.items():
        schema = model.model_json_schema()
        assert schema["type"] == "object", name


def test_every_event_type_has_a_subscribed_handler() -> None:
    # The relay refuses to mark an unroutable event published: each type needs a queue.
    from orderflow.entrypoints.bootstrap import Deps, build_registry
    from orderflow.settings import Settings

    settings = Settings(autopilot=True)
    registry = build_registry(Deps(settings=settings, pool=None))
    orphans = [t for t in EVENT_TYPES if not registry.subscribers(t)]
    assert orphans == []


def test_a_fresh_envelope_starts_its_own_conversation() -> None:
    order_id = uuid.uuid4()
    envelope = Envelope.wrap(OrderCancelled(reason="x", previous_status="paid"), order_id=order_id)
    assert envelope.correlation_id == envelope.event_id
    assert envelope.causation_id is None
    assert (envelope.type, envelope.schema_version) == ("order.cancelled", 1)
    assert envelope.actor == "system"
    assert envelope.occurred_at.utcoffset() == timedelta(0)  # an aware UTC instant


def test_an_envelope_joins_the_conversation_it_is_given() -> None:
    conversation, cause = uuid.uuid4(), uuid.uuid4()
    envelope = Envelope.wrap(
        OrderCancelled(reason="x", previous_status="paid"),
        order_id=None,
        correlation_id=conversation,
        causation_id=cause,
        actor="admin:k1",
    )
    assert (envelope.correlation_id, envelope.causation_id) == (conversation, cause)
    assert envelope.event_id not in (conversation, cause)
    assert envelope.actor == "admin:k1"


def test_a_chain_of_follows_keeps_the_first_conversation_and_names_each_direct_cause() -> None:
    first = Envelope.wrap(
        OrderCancelled(reason="x", previous_status="created"), order_id=uuid.uuid4()
    )
    second = first.follow(OrderCancelled(reason="y", previous_status="paid"), actor="worker")
    third = second.follow(OrderCancelled(reason="z", previous_status="paid"))
    assert {second.correlation_id, third.correlation_id} == {first.event_id}
    assert (second.causation_id, third.causation_id) == (first.event_id, second.event_id)
    assert len({first.event_id, second.event_id, third.event_id}) == 3
    assert (second.actor, third.actor) == ("worker", "system")  # the actor is not inherited
    assert third.order_id == first.order_id


def test_the_payload_is_stored_as_json_ready_values() -> None:
    payment_id = uuid.uuid4()
    envelope = Envelope.wrap(
        PaymentFailed(payment_id=payment_id, reason="declined"), order_id=uuid.uuid4()
    )
    assert envelope.payload == {"payment_id": str(payment_id), "reason": "declined"}
    assert envelope.event() == PaymentFailed(payment_id=payment_id, reason="declined")


def test_an_envelope_with_a_field_it_does_not_know_is_refused() -> None:
    envelope = Envelope.wrap(OrderCancelled(reason="x", previous_status="paid"), order_id=None)
    data = {**envelope.model_dump(mode="json"), "priority": "high"}
    with pytest.raises(ValidationError, match="priority"):
        Envelope.model_validate(data)


def test_a_payload_with_a_field_its_event_does_not_know_is_refused() -> None:
    envelope = Envelope.wrap(OrderCancelled(reason="x", previous_status="paid"), order_id=None)
    forged = envelope.model_copy(update={"payload": {**envelope.payload, "refund": True}})
    with pytest.raises(ValidationError, match="refund"):
        forged.event()


def test_events_and_envelopes_cannot_be_changed_once_made() -> None:
    event = OrderCancelled(reason="x", previous_status="paid")
    envelope = Envelope.wrap(event, order_id=None)
    with pytest.raises(ValidationError):
        event.reason = "y"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        envelope.type = "order.paid"  # type: ignore[misc]


def test_a_line_of_nothing_or_at_a_negative_price_is_refused() -> None:
    product = uuid.uuid4()
    with pytest.raises(ValidationError):
        Line(product_id=product, sku="A", quantity=0, unit_price=100)
    with pytest.raises(ValidationError):
        Line(product_id=product, sku="A", quantity=1, unit_price=-1)
    assert Line(product_id=product, sku="A", quantity=1, unit_price=0).unit_price == 0  # free
