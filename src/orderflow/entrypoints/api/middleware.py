"""Pure-ASGI middleware: unexpected errors, body size limit and request metrics (cheap on the
hot path)."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderflow.domain.access import key_prefix
from orderflow.entrypoints.api.edge import OPS_PATHS
from orderflow.entrypoints.api.problems import problem
from orderflow.observability.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger(__name__)


class _TrackedSend:
    """``send``, remembering whether the response has started (its headers went out): after
    that, an error can no longer be answered with a response of its own."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class _HttpMiddleware:
    """An ASGI middleware that acts on HTTP requests (``http``); other scopes (lifespan,
    websockets) pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request."""
        raise NotImplementedError


class UnhandledErrorMiddleware(_HttpMiddleware):
    """The last resort: an exception nothing else handled is logged once, as one record (a
    bounded traceback without local variables: ``observability.logging``), and answered with a
    500 problem if the response has not started.

    It is not re-raised: Starlette's outermost error middleware would answer it again and
    uvicorn would log the same traceback a second time.
    """

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracked = _TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error(
                "unhandled_error",
                method=scope.get("method"),
                path=scope.get("path"),
                response_started=tracked.started,
                exc_info=exc,
            )
            if not tracked.started:
                response = problem(
                    500, code="internal-error", detail="an unexpected error occurred; it was logged"
                )
                await response(scope, receive, send)


# On every response: no MIME sniffing, no framing, no referrer leaking ids in URLs.
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# On JSON answers (never rendered as a page): nothing may load, nothing may frame them. The
# HTML pages (/docs, /admin) set their own policy.
_JSON_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")


class SecurityHeadersMiddleware(_HttpMiddleware):
    """Adds the security headers to every HTTP response that does not set them itself."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in _SECURITY_HEADERS if h[0] not in present]
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                if b"json" in content_type and _JSON_CSP[0] not in present:
                    headers.append(_JSON_CSP)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyTooLarge(HTTPException):
    """Raised while the body streams in (chunked, or longer than it said): an HTTPException,
    so that FastAPI's body parsing lets it through as a 413 rather than a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, detail=f"request bodies are limited to {max_bytes} bytes")


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class BodyLimitMiddleware(_HttpMiddleware):
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming, and
    under ``json_prefix`` a body whose Content-Type is not JSON with 415."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, json_prefix: str = "/api/") -> None:
        super().__init__(app)
        self.max_bytes = max_bytes
        self.json_prefix = json_prefix

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        length: bytes | None = None
        content_type: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        has_body = chunked or (length is not None and length != b"0")
        if (
            has_body
            and content_type is not None
            and not _is_json(content_type)
            and scope["method"] in _BODY_METHODS
            and scope["path"].startswith(self.json_prefix)
        ):
            await problem(
                415,
                code="unsupported-media-type",
                title="Unsupported media type",
                detail="request bodies are JSON: send Content-Type: application/json",
                headers={"Accept": "application/json"},
            )(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        tracked = _TrackedSend(send)
        try:
            await self.app(scope, limited_receive, tracked)
        except BodyTooLarge:
            if not tracked.started:
                await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            code="body-too-large",
            detail=f"request bodies are limited to {self.max_bytes} bytes",
        )
        await response(scope, receive, send)


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ORDER_PATH = re.compile(r"/api/v1/orders/([0-9a-f-]{36})")


class RequestObservationMiddleware(_HttpMiddleware):
    """Per request: a request id (the caller's ``X-Request-ID`` when well-formed, else a new
    one), returned as a header and bound to every log line of the request; the metrics per
    route template (never per raw path: cardinality); and one ``http_request`` log line with
    route, status, duration, the API key's prefix and the order concerned. Probes and scrapes
    (``OPS_PATHS``) are counted but not logged."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500
        location = b""
        request_id = ""
        authorization = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _REQUEST_ID.fullmatch(value.decode("latin-1")):
                request_id = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value
        request_id = request_id or uuid.uuid4().hex

        async def observe(message: Message) -> None:
            nonlocal status, location
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                location = headers.get("location", "").encode()
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, observe)
            finally:
                elapsed = time.perf_counter() - start
                route = scope.get("route")
                template = getattr(route, "path", "unmatched")
                method = scope["method"]
                HTTP_LATENCY.labels(method, template).observe(elapsed)
                HTTP_REQUESTS.labels(method, template, str(status)).inc()
                if scope["path"] not in OPS_PATHS:
                    log.info(
                        "http_request",
                        request_id=request_id,
                        method=method,
                        route=template,
                        status=status,
                        duration_ms=round(elapsed * 1000, 2),
                        key_prefix=_key_prefix(authorization),
                        order_id=_order_id(scope, location),
                    )


def _key_prefix(authorization: bytes) -> str | None:
    """The caller's key prefix (never the secret), when it presented a well-formed key."""
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    return key_prefix(token.strip()) if scheme.lower() == "bearer" else None


def _order_id(scope: Scope, location: bytes) -> str | None:
    """The order a request concerned: its path parameter, or the one it created (Location)."""
    found = scope.get("path_params", {}).get("order_id")
    if found is not None:
        return str(found)
    created = _ORDER_PATH.search(location.decode("latin-1"))
    return created.group(1) if created else None
