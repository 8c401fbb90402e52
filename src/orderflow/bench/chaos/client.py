"""The chaos load's HTTP client: every request classified as ok (2xx), failed (a definite 4xx
or 5xx answer) or indeterminate (no answer: a timeout, a refused or broken connection)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
import orjson


class Outcome(StrEnum):
    """What a request's sender knows of its effect."""

    OK = "ok"
    FAILED = "failed"
    INDETERMINATE = "indeterminate"


@dataclass(frozen=True, slots=True)
class Request:
    """A request to make: its kind in the figures, method, path, JSON body, idempotency key."""

    kind: str  # place | pay | cancel | read | replay
    method: str
    path: str
    body: dict[str, Any] | None = None
    key: str | None = None


@dataclass
class Call:
    """One request and what came of it (wall-clock times)."""

    kind: str  # place | pay | cancel | read | replay
    key: str | None
    sent_at: float
    answered_at: float
    outcome: Outcome
    status: int | None = None
    body: dict[str, Any] | None = None
    error: str = ""


class Client:
    """JSON requests to the API with the run's credentials, each one classified."""

    def __init__(self, base_url: str, auth: dict[str, str], *, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=auth,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=400, max_keepalive_connections=100),
        )

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def send(self, request: Request) -> Call:
        """One request; never raises for what the network or the server did."""
        kind, key = request.kind, request.key
        headers = {"Idempotency-Key": key} if key else {}
        content = orjson.dumps(request.body) if request.body is not None else None
        if content is not None:
            headers["content-type"] = "application/json"
        sent = time.time()
        try:
            response = await self._http.request(
                request.method, request.path, content=content, headers=headers
            )
        except httpx.TransportError as exc:  # timeouts, refused and broken connections
            error = f"{type(exc).__name__}: {exc}"[:200]
            return Call(kind, key, sent, time.time(), Outcome.INDETERMINATE, error=error)
        answered = time.time()
        outcome = Outcome.OK if response.is_success else Outcome.FAILED
        parsed: dict[str, Any] | None = None
        try:
            value = orjson.loads(response.content) if response.content else None
            parsed = value if isinstance(value, dict) else None
        except orjson.JSONDecodeError:
            parsed = None
        return Call(kind, key, sent, answered, outcome, response.status_code, parsed)
