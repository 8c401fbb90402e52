"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

import asyncio

import orjson
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orderflow.entrypoints.api.deps import State
from orderflow.entrypoints.api.problems import documented, problem
from orderflow.observability.metrics import DEPENDENCY_UP, ProcessRegistry

router = APIRouter(tags=["operations"])
API_METRICS = ProcessRegistry("api")  # the api's own metrics, not the relay's or worker's


@router.get(
    "/healthz",
    summary="The process is alive: its duties running, its event loop not stuck",
    description="200 while every supervised duty of the process runs (none failing again "
    "and again) and its event loop ticks; 503 otherwise, for the liveness probe to restart "
    "the process. Says nothing about the database or the broker: that is `/readyz`.",
    responses={503: documented("A duty keeps failing, or the event loop is stuck")},
)
async def healthz(state: State) -> Response:
    health = state.duties.health()
    if health["status"] == "ok":
        return Response(orjson.dumps(health), media_type="application/json")
    return problem(
        503,
        code="unhealthy",
        detail="a duty of this process keeps failing, or its event loop is stuck",
        extra=health,
    )


@router.get(
    "/readyz",
    summary="The api can serve: its database answers",
    description="200 while the database answers: `status` is `ready`, or `degraded` when the "
    "broker or Redis is down (orders are still accepted: the outbox keeps their events, and "
    "Redis only speeds things up), with every check in `checks` and in the metric "
    "`orderflow_dependency_up{dependency}`. 503 only when the database does not answer, so "
    "that a Redis or broker blip never takes every api replica out of its Service.",
    responses={503: documented("The database does not answer")},
)
async def readyz(state: State) -> Response:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            await state.pool.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means not ready
        checks["database"] = f"down: {type(exc).__name__}"
    if state.broker is not None:
        checks["broker"] = await state.broker.check()
    checks["redis"] = "ok" if await state.redis.ping() else "down"
    for dependency, result in checks.items():
        DEPENDENCY_UP.labels(dependency).set(1 if result == "ok" else 0)
    if checks["database"] != "ok":
        return problem(
            503, code="not-ready", detail="the database is unreachable", extra={"checks": checks}
        )
    status = "ready" if all(v == "ok" for v in checks.values()) else "degraded"
    return Response(
        orjson.dumps({"status": status, "checks": checks}), media_type="application/json"
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(API_METRICS), media_type=CONTENT_TYPE_LATEST)
