from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from orderflow.domain.events import (
    EVENT_TYPES,
    HAPPY_PATH,
    Envelope,
    OrderCancelled,
    OrderPlaced,
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
