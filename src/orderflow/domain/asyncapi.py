"""The AsyncAPI 3.0 document of the events, generated from the event models. Pure.

Channels are the routing keys of the topic exchange (one per event type) and the webhook
endpoints; messages carry the envelope around each typed payload (RabbitMQ) or the
Standard Webhooks body and headers (webhooks). Served at ``/api/v1/events/asyncapi.json`` and
summarised in docs/event-catalogue.md (``orderflow docs``).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from orderflow.domain.events import EVENT_TYPES, Envelope, Event

ASYNCAPI_VERSION: Final = "3.0.0"
_REF = "#/components/schemas/{model}"

WEBHOOK_HEADERS: Final = {
    "webhook-id": "the delivery's id, the same on every retry and redelivery: deduplicate by it",
    "webhook-timestamp": "when this attempt was sent, Unix seconds",
    "webhook-signature": "space-separated `v1,<base64 HMAC-SHA256 of "
    '"<webhook-id>.<webhook-timestamp>.<body>">`, one per secret in force (two during a '
    "rotation's overlap); the key is the base64-decoded secret after `whsec_`",
}


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON schema with its definitions moved to ``schemas`` (components)."""
    schema = model.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    return schema


def _message_name(model: type[Event]) -> str:
    return model.__name__


def _entry_schema(event: str, payload_ref: str) -> dict[str, Any]:
    """A timeline entry as streams and webhooks show it, its ``data`` the event's payload."""
    return {
        "type": "object",
        "required": ["id", "order_id", "event", "event_id", "at", "actor", "status", "data"],
        "properties": {
            "id": {"type": "integer", "description": "the timeline entry's id"},
            "order_id": {"type": "string", "format": "uuid"},
            "event": {"const": event},
            "event_id": {"type": "string", "format": "uuid"},
            "at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string"},
            "status": {"type": "string", "description": "the order's status after the event"},
            "data": {"$ref": payload_ref},
        },
    }


def document(*, version: str, exchange: str) -> dict[str, Any]:
    """The AsyncAPI document of every event type, on the broker and as webhooks."""
    schemas: dict[str, Any] = {}
    envelope = _schema(Envelope, schemas)
    envelope["properties"]["payload"] = {"description": "the event's payload (see each message)"}
    schemas["Envelope"] = envelope
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    webhook_refs: dict[str, Any] = {}
    for event, model in EVENT_TYPES.items():
        name = _message_name(model)
        schemas[name] = _schema(model, schemas)
        payload_ref = _REF.format(model=name)
        summary = (model.__doc__ or "").strip()
        messages[name] = {
            "name": event,
            "title": event,
            "summary": summary,
            "contentType": "application/json",
            "correlationId": {"location": "$message.payload#/correlation_id"},
            "payload": {
                "allOf": [
                    {"$ref": _REF.format(model="Envelope")},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event},
                            "schema_version": {"const": model.VERSION},
                            "payload": {"$ref": payload_ref},
                        },
                    },
                ]
            },
            "bindings": {
                "amqp": {
                    "contentEncoding": "utf-8",
                    "messageType": event,
                    "bindingVersion": "0.3.0",
                }
            },
        }
        messages[f"{name}Webhook"] = {
            "name": event,
            "title": f"{event} (webhook)",
            "summary": summary,
            "contentType": "application/json",
            "headers": {"$ref": _REF.format(model="WebhookHeaders")},
            "payload": {
                "type": "object",
                "required": ["type", "timestamp", "data"],
                "properties": {
                    "type": {"const": event},
                    "timestamp": {"type": "string", "format": "date-time"},
                    "data": _entry_schema(event, payload_ref),
                },
            },
        }
        channels[event] = {
            "address": event,
            "title": event,
            "description": f"Routing key `{event}` on the topic exchange `{exchange}`. {summary}",
            "servers": [{"$ref": "#/servers/rabbitmq"}],
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": "0.3.0",
                }
            },
        }
        operations[f"publish.{event}"] = {
            "action": "send",
            "title": f"publish {event}",
            "summary": "The relay publishes the event from the outbox (persistent, confirmed).",
            "channel": {"$ref": f"#/channels/{event}"},
            "messages": [{"$ref": f"#/channels/{event}/messages/{name}"}],
        }
        webhook_refs[f"{name}Webhook"] = {"$ref": f"#/components/messages/{name}Webhook"}
    channels["webhooks"] = {
        "address": None,
        "title": "webhook endpoints",
        "description": "Each subscription's URL (docs/webhooks.md): one POST per event of a "
        "subscribed order, signed per the Standard Webhooks convention.",
        "servers": [{"$ref": "#/servers/webhooks"}],
        "messages": webhook_refs,
    }
    operations["deliver.webhook"] = {
        "action": "send",
        "title": "deliver a webhook",
        "summary": "The workers POST each delivery, retried until a 2xx; per order and "
        "endpoint in timeline order.",
        "channel": {"$ref": "#/channels/webhooks"},
        "messages": [{"$ref": f"#/channels/webhooks/messages/{m}"} for m in webhook_refs],
    }
    schemas["WebhookHeaders"] = {
        "type": "object",
        "required": list(WEBHOOK_HEADERS),
        "properties": {
            name: {"type": "string", "description": meaning}
            for name, meaning in WEBHOOK_HEADERS.items()
        },
    }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "id": "urn:orderflow:events",
        "info": {
            "title": "orderflow events",
            "version": version,
            "description": "Every event of an order's saga: on RabbitMQ (one routing key per "
            "event type, the envelope around its payload) and as signed webhooks.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "localhost:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "ORDERFLOW_RABBITMQ_URL",
            },
            "webhooks": {
                "host": "subscriber.example",
                "protocol": "https",
                "description": "the subscribers' own endpoints (http or https)",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def markdown(doc: dict[str, Any]) -> str:
    """A summary of the document for docs/event-catalogue.md: its channels, operations and
    the webhook headers."""
    info = doc["info"]
    lines = [
        f"AsyncAPI {doc['asyncapi']}, `{info['title']}`. The whole document: "
        "`GET /api/v1/events/asyncapi.json`.",
        "",
        "| channel (address) | server | message | operation |",
        "|---|---|---|---|",
    ]
    by_channel: dict[str, list[str]] = {}
    for name, operation in doc["operations"].items():
        channel = operation["channel"]["$ref"].rsplit("/", 1)[1]
        by_channel.setdefault(channel, []).append(f"`{name}` ({operation['action']})")
    for name, channel in doc["channels"].items():
        address = f"`{channel['address']}`" if channel["address"] else "each subscription's URL"
        servers = ", ".join(s["$ref"].rsplit("/", 1)[1] for s in channel["servers"])
        messages = list(channel["messages"])
        shown = f"`{messages[0]}`" if len(messages) == 1 else f"{len(messages)} (one per event)"
        lines.append(f"| {address} | {servers} | {shown} | {', '.join(by_channel.get(name, []))} |")
    lines += ["", "| webhook header | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {meaning} |" for name, meaning in WEBHOOK_HEADERS.items()]
    return "\n".join(lines) + "\n"
