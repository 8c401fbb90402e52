"""``Idempotency-Key`` for unsafe endpoints: one dependency, one argument to the use case.

To make an endpoint idempotent, add ``idem: IdempotencyKey`` to the route and pass
``idempotency=idem.recording(OrderOut.of, status_code=200)`` to a use case that runs in a
``unit_of_work(pool, idempotency=...)`` and calls ``uow.complete(result)``. The record is
claimed and answered inside the use case's own transaction (see kernel/uow.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Header, Request
from pydantic import BaseModel
from starlette.responses import Response

from orderflow.domain.idempotency import IdempotentRequest, Replay
from orderflow.entrypoints.api.deps import caller
from orderflow.settings import Settings

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True, slots=True)
class Idempotency:
    """The request's ``Idempotency-Key`` (if any), scoped to the caller and hashed."""

    key: str | None
    scope: str
    request_hash: bytes
    settings: Settings

    def recording(
        self, render: Callable[[Any], BaseModel], *, status_code: int
    ) -> IdempotentRequest | None:
        """What the use case records; None without a key. ``render`` builds the body."""
        if self.key is None:
            return None
        return IdempotentRequest(
            scope=self.scope,
            key=self.key,
            request_hash=self.request_hash,
            status_code=status_code,
            render=lambda result: render(result).model_dump_json().encode(),
            ttl_s=self.settings.idempotency_ttl_s,
            wait_s=self.settings.idempotency_wait_s,
        )


def _canonical(body: bytes) -> bytes:
    # The same JSON with other spacing or key order is the same request.
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return body


async def _idempotency(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=IDEMPOTENCY_HEADER,
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Repeat a request safely: the same key and body replay the first "
            "response (24 h); another body with the same key is a 422; while the first is "
            "still running, a 409.",
        ),
    ] = None,
) -> Idempotency:
    settings: Settings = request.app.state.orderflow.settings
    if key is None:
        return Idempotency(key=None, scope="", request_hash=b"", settings=settings)
    principal = caller(request)
    client = request.client.host if request.client else "unknown"
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode()):
        digest.update(part + b"\n")
    digest.update(_canonical(await request.body()))
    return Idempotency(
        key=key,
        scope=principal.scope if principal else f"ip:{client}",
        request_hash=digest.digest(),
        settings=settings,
    )


IdempotencyKey = Annotated[Idempotency, Depends(_idempotency)]


async def _replay(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Replay)
    recorded = exc.response
    return Response(
        recorded.body,
        status_code=recorded.status_code,
        headers={**recorded.headers, REPLAYED_HEADER: "true"},
    )


def install(app: FastAPI) -> None:
    """Answer replayed requests with their recorded response."""
    app.add_exception_handler(Replay, _replay)
