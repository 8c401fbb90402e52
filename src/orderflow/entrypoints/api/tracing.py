"""A span per HTTP request (pure ASGI), named by its route template once routing has found it."""

from __future__ import annotations

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderflow.observability.tracing import tracer, tracing_enabled


class TracingMiddleware:
    """Opens a server span around each request; the order it places or moves joins its trace
    (``observability.tracing``). Without a tracing SDK it passes requests straight on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.enabled = tracing_enabled()  # decided once: nothing at all per request without it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        with tracer().start_as_current_span(method, kind=SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("url.path", scope["path"])

            async def observed(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(Status(StatusCode.ERROR))
                await send(message)

            try:
                await self.app(scope, receive, observed)
            finally:
                template = getattr(scope.get("route"), "path", None)
                if template is not None:
                    span.set_attribute("http.route", template)
                    span.update_name(f"{method} {template}")
