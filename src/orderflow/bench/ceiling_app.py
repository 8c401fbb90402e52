"""The ceiling app: the least an HTTP endpoint that writes to PostgreSQL can do.

``POST /ceiling/insert`` validates a small JSON body and inserts one row in one transaction,
over the same pool settings and under the same uvicorn settings as the real API: what it
serves per second is the ceiling ``place`` is compared to. ``GET /noop`` answers without
touching anything; the load generator measures its own ceiling against it. The bench creates
the ``bench_ceiling`` table before it starts this app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.types import ASGIApp, Receive, Scope, Send

from orderflow.kernel.database import create_pool
from orderflow.kernel.process import settle_heap
from orderflow.settings import Settings, get_settings

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_ceiling (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       text NOT NULL,
    quantity   integer NOT NULL CHECK (quantity > 0),
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
_INSERT = "INSERT INTO bench_ceiling (name, quantity) VALUES ($1, $2) RETURNING id"


class CeilingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    quantity: int = Field(gt=0, le=1000)


class CeilingOut(BaseModel):
    id: int


def create_app(settings: Settings | None = None) -> ASGIApp:
    """The ceiling app; its pool opens in the lifespan."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await create_pool(settings)
        settle_heap()  # as the API does: the same process settings on both sides
        try:
            yield
        finally:
            await app.state.pool.close()

    api = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @api.post("/ceiling/insert", status_code=201)
    async def insert(body: CeilingIn, request: Request) -> CeilingOut:
        async with request.app.state.pool.acquire() as conn, conn.transaction():
            row_id: int = await conn.fetchval(_INSERT, body.name, body.quantity)
        return CeilingOut(id=row_id)

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return _NoopFirst(api)


class _NoopFirst:
    """Answer ``GET /noop`` before any framework code runs; pass everything else on."""

    BODY = b"{}"
    START = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
    }

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/noop":
            await send(self.START)
            await send({"type": "http.response.body", "body": self.BODY})
            return
        await self.app(scope, receive, send)
