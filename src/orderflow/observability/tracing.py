"""Traces: OpenTelemetry spans for HTTP requests and saga deliveries.

A conversation is a trace: an order's events carry its trace id as their correlation id, and
the relay derives each message's W3C ``traceparent`` from it (``kernel.broker.traceparent``),
so a request, the events it caused and every handler that applied them share one trace, across
the outbox and the broker. Spans are exported over OTLP/HTTP when ``ORDERFLOW_OTLP_ENDPOINT`` is
set; without it no SDK is installed, and spans are the OpenTelemetry API's no-op ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from orderflow import __version__
from orderflow.domain.events import Envelope
from orderflow.settings import Settings

if TYPE_CHECKING:  # the SDK is imported only by a process that exports traces
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

_PROPAGATOR = TraceContextTextMapPropagator()
# This process's provider, once ``configure_tracing`` installed one. Kept here rather than as
# OpenTelemetry's global, which can be set only once per process: tests install one and stop it.
_provider: TracerProvider | None = None


def configure_tracing(
    settings: Settings, *, process: str, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install the SDK for this process when traces are wanted: exported over OTLP/HTTP to
    ``settings.otlp_endpoint`` in batches, or to ``exporter`` as each span ends (tests).

    None, and nothing installed, when neither is given; a second call replaces the first.
    """
    if exporter is None and settings.otlp_endpoint is None:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create(
        {
            "service.name": "orderflow",
            "service.instance.id": process,
            "service.version": __version__,
        }
    )
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = (settings.otlp_endpoint or "").rstrip("/")
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(f"{base}/v1/traces")))
    global _provider
    stop_tracing()
    _provider = provider
    return provider


def stop_tracing() -> None:
    """Export what is pending and uninstall the provider (spans made after are no-ops)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def tracing_enabled() -> bool:
    """Whether this process installed a tracing SDK (``configure_tracing``)."""
    return _provider is not None


def tracer() -> trace.Tracer:
    """The process's tracer: the installed provider's, else OpenTelemetry's no-op one."""
    if _provider is None:
        return trace.NoOpTracer()
    return _provider.get_tracer("orderflow", __version__)


def current_trace_id() -> uuid.UUID | None:
    """The trace the current span belongs to, as a UUID (an order's correlation id); None
    outside any recorded trace."""
    context = trace.get_current_span().get_span_context()
    return uuid.UUID(int=context.trace_id) if context.is_valid else None


def parent_from(traceparent: str | None) -> Context | None:
    """The context a message's ``traceparent`` header names as its parent; None without one."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})


@contextmanager
def delivery_span(
    handler: str, queue: str, envelope: Envelope, attempt: int, traceparent: Any
) -> Iterator[Span]:
    """A consumer span for one delivery to ``handler``. The message's ``traceparent`` carries
    the order's trace (its correlation id) and names the event as the parent, so every handler
    of a conversation joins its trace."""
    parent = parent_from(str(traceparent) if traceparent else None)
    with tracer().start_as_current_span(
        f"{handler} process",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": str(envelope.event_id),
            "orderflow.handler": handler,
            "orderflow.event.type": envelope.type,
            "orderflow.order.id": str(envelope.order_id or ""),
            "orderflow.attempt": attempt,
        },
    ) as span:
        yield span
