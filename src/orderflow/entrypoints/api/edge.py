"""The edge middleware: who is calling (API key) and whether they may call now (rate limit).

Pure ASGI and on every request, so it stays cheap: a known key costs a SHA-256 and a dict
look-up (no database trip), and the rate-limit decision is one EVALSHA (pipelined with the
process's other requests of the moment). Role checks happen later, in the route dependencies
of ``deps.py``; this layer only establishes identity.
"""

from __future__ import annotations

import asyncio

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orderflow.access.ratelimit import Decision
from orderflow.domain.access import key_prefix
from orderflow.domain.webhooks import GATEWAY_WEBHOOKS_PATH
from orderflow.entrypoints.api.deps import AppState
from orderflow.entrypoints.api.problems import problem
from orderflow.observability.metrics import RATE_LIMIT_DECISIONS

log = structlog.get_logger(__name__)

# Operators' endpoints: never authenticated, never limited (probes must not be throttled).
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Authenticated by their signature instead of a key, and not limited per address: the payment
# gateway's webhooks (``routers.payment_gateway``).
SIGNED_PATHS = frozenset({GATEWAY_WEBHOOKS_PATH})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})


def route_group(method: str, path: str) -> str:
    """The rate-limit group of a request: read, orders (any order action) or write."""
    if method in _READS:
        return "read"
    if path.startswith("/api/v1/orders"):
        return "orders"
    return "write"


class _LookupsExhausted(Exception):
    def __init__(self, decision: Decision) -> None:
        super().__init__("key look-ups exhausted")
        self.decision = decision


class EdgeMiddleware:
    """Authenticate the bearer key if one is sent, then apply the group's rate limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPS_PATHS | SIGNED_PATHS:
            await self.app(scope, receive, send)
            return
        state: AppState = scope["app"].state.orderflow
        client = scope.get("client")
        address = client[0] if client else "unknown"
        identity = f"ip:{address}"
        # A per-request copy: servers may share the lifespan's state dict between requests.
        scope["state"] = {**scope.get("state", {}), "principal": None}
        authorization = _header(scope, b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                await _refuse_key(scope, receive, send, "use Authorization: Bearer <key>")
                return

            async def limit_lookups() -> None:
                # A database trip for a key this process never saw valid: refused while the
                # address is over its budget of failed attempts (spends nothing here).
                decision = await _decide(state, "auth", identity, peek=True)
                if decision is not None and not decision.allowed:
                    raise _LookupsExhausted(decision)

            try:
                principal = await state.keys.verify(token, before_lookup=limit_lookups)
            except _LookupsExhausted as exhausted:
                await _too_many(state, "auth", exhausted.decision, scope, receive, send)
                return
            except Exception as exc:  # the database is down or slow: no guessing, no 500
                log.warning("key_lookup_failed", error=repr(exc))
                await problem(
                    503,
                    code="auth-unavailable",
                    detail="API keys cannot be checked right now; retry after Retry-After",
                    headers={"Retry-After": "1"},
                )(scope, receive, send)
                return
            if principal is None:
                denied = await _failed_attempt(state, address, key_prefix(token))
                if denied is not None:
                    await _too_many(state, "auth", denied, scope, receive, send)
                    return
                await _refuse_key(scope, receive, send, "the API key is unknown or revoked")
                return
            scope["state"]["principal"] = principal
            identity = f"key:{principal.key_id}"

        group = route_group(scope["method"], scope["path"])
        decision = await _decide(state, group, identity)
        if decision is None:  # limiting off, or Redis unreachable: fail open
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            await _too_many(state, group, decision, scope, receive, send)
            return
        extra = state.limiter.headers(group, decision)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _decide(
    state: AppState, group: str, identity: str, *, peek: bool = False
) -> Decision | None:
    if not state.settings.rate_limit_enabled:
        return None
    quota, window = state.settings.rate_limit(group)
    decision = await state.limiter.decide(
        group=group, identity=identity, quota=quota, window_s=window, peek=peek
    )
    if decision is not None and not peek:
        RATE_LIMIT_DECISIONS.labels(group, "allow" if decision.allowed else "deny").inc()
    return decision


async def _failed_attempt(state: AppState, address: str, prefix: str | None) -> Decision | None:
    """Count a failed key against its address and its key prefix (the "auth" quota each);
    the decision that refuses, if one does: the caller then answers 429 instead of 401."""
    identities = [f"ip:{address}"] + ([f"prefix:{prefix}"] if prefix else [])
    decisions = await asyncio.gather(*(_decide(state, "auth", i) for i in identities))
    return next((d for d in decisions if d is not None and not d.allowed), None)


async def _refuse_key(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    response = problem(
        401,
        code="unauthenticated",
        title="Authentication required",
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )
    await response(scope, receive, send)


async def _too_many(
    state: AppState, group: str, decision: Decision, scope: Scope, receive: Receive, send: Send
) -> None:
    headers = {k.decode(): v.decode() for k, v in state.limiter.headers(group, decision)}
    response = problem(
        429,
        code="rate-limited",
        title="Too many requests",
        detail=f"the '{group}' limit is {decision.quota} requests per {decision.window_s:g} s; "
        f"retry after {headers['retry-after']} s",
        headers=headers,
    )
    await response(scope, receive, send)
