"""The AsyncAPI document validates against the official AsyncAPI 3.0.0 JSON Schema (vendored
in tests/schemas/asyncapi, offline), and says what the events and webhooks are."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock
import pytest

from orderflow import __version__
from orderflow.domain.asyncapi import WEBHOOK_HEADERS, document
from orderflow.domain.events import EVENT_TYPES

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "asyncapi" / "3.0.0.json"


@functools.cache  # one validator for the file: it resolves and caches the schema's refs
def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$id"] == "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
    return jsonschema.Draft7Validator(schema)


def _errors(doc: dict[str, Any]) -> list[str]:
    return [e.message for e in _validator().iter_errors(doc)]


def test_the_document_is_valid_asyncapi_3() -> None:
    doc = document(version=__version__, exchange="orderflow.events")
    assert doc["asyncapi"] == "3.0.0"
    assert _errors(json.loads(json.dumps(doc))) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d.pop("info"),
        lambda d: d["channels"]["order.created"].update(address=42),
        lambda d: d["operations"]["publish.order.created"].update(action="publish"),
        lambda d: d["servers"]["rabbitmq"].pop("protocol"),
    ],
    ids=["no info", "address not a string", "2.x action", "server without protocol"],
)
def test_the_schema_refuses_a_broken_document(break_it: Any) -> None:
    """The vendored schema can fail: each of these mistakes is caught."""
    doc = copy.deepcopy(document(version=__version__, exchange="orderflow.events"))
    break_it(doc)
    assert not _validator().is_valid(doc)  # stops at the first error it finds


def test_every_event_is_a_channel_named_by_its_routing_key_with_its_payload_schema() -> None:
    doc = document(version="1", exchange="shop.events")
    for event, model in EVENT_TYPES.items():
        channel = doc["channels"][event]
        assert channel["address"] == event
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "shop.events"
        [ref] = channel["messages"].values()
        message = doc["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        payload = message["payload"]["allOf"][1]["properties"]
        assert payload["type"] == {"const": event}
        schema = doc["components"]["schemas"][model.__name__]
        assert set(schema["properties"]) == set(model.model_fields)
    webhooks = doc["channels"]["webhooks"]
    assert len(webhooks["messages"]) == len(EVENT_TYPES)
    headers = doc["components"]["schemas"]["WebhookHeaders"]
    assert set(headers["required"]) == set(WEBHOOK_HEADERS)
    assert set(WEBHOOK_HEADERS) == {"webhook-id", "webhook-timestamp", "webhook-signature"}


def test_every_reference_resolves() -> None:
    doc = document(version="1", exchange="orderflow.events")

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return ([node["$ref"]] if "$ref" in node else []) + [
                r for v in node.values() for r in refs(v)
            ]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/"), ref
        target: Any = doc
        for part in ref[2:].split("/"):
            target = target[part]
