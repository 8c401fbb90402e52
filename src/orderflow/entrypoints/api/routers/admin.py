"""The admin dashboard: log in with an admin key, then watch the system live.

``/admin/login`` exchanges an admin API key for a session (Redis, cookie ``orderflow_admin``:
HttpOnly, SameSite=Strict, Secure in production). ``/admin`` is a static page whose script
reads ``/admin/api/snapshot`` once and then follows ``/admin/stream`` (server-sent events,
one snapshot every ``ORDERFLOW_ADMIN_REFRESH_S``). The pages build the DOM with
``textContent`` only and are served with a strict Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from orderflow.adapters.rabbitmq.topology import Names
from orderflow.adapters.redis.sessions import SessionsUnavailable
from orderflow.domain.access import Principal, Role
from orderflow.domain.errors import Forbidden, Unauthenticated
from orderflow.entrypoints.api.deps import AppState, State
from orderflow.entrypoints.api.problems import ProblemRoute, problem
from orderflow.service import dashboard

router = APIRouter(prefix="/admin", tags=["admin dashboard"], route_class=ProblemRoute)

COOKIE = "orderflow_admin"
_STATIC = Path(__file__).resolve().parent.parent / "admin_static"
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LoginIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"api_key": "ofk_…"}]}
    )
    api_key: Annotated[str, Field(min_length=1, max_length=200)]


def _unavailable() -> Response:
    return problem(
        503, code="sessions-unavailable", detail="admin sessions cannot be opened or checked now"
    )


async def _session_principal(request: Request, state: AppState) -> Principal | None:
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    return await state.sessions.principal(session_id)


async def _admin_session(request: Request, state: State) -> Principal:
    """The admin behind the session cookie; 401 without one (the page then shows login)."""
    try:
        principal = await _session_principal(request, state)
    except SessionsUnavailable:
        raise Unauthenticated("admin sessions cannot be checked right now; log in again") from None
    if principal is None:
        raise Unauthenticated("log in at /admin/login first")
    return principal


AdminSession = Annotated[Principal, Depends(_admin_session)]


def _page(name: str) -> FileResponse:
    return FileResponse(_STATIC / name, headers=_PAGE_HEADERS)


@router.get("/login", include_in_schema=False)
async def login_page() -> FileResponse:
    return _page("login.html")


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in {"admin.js", "admin.css"}:
        return problem(404, code="not-found", detail=f"no asset {name!r}")
    return _page(name)


@router.post(
    "/login",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Open an admin dashboard session with an admin API key",
    responses={401: {"description": "unknown or revoked key"}, 403: {"description": "not admin"}},
)
async def login(body: LoginIn, state: State) -> Response:
    principal = await state.keys.verify(body.api_key.strip())
    if principal is None:
        raise Unauthenticated("the API key is unknown or revoked")
    if principal.role is not Role.ADMIN:
        raise Forbidden("the dashboard is for admin keys")
    try:
        session_id = await state.sessions.open(principal)
    except SessionsUnavailable:
        return _unavailable()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=state.settings.admin_session_ttl_s,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=state.settings.is_production,
    )
    return response


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End the session")
async def logout(request: Request, state: State) -> Response:
    session_id = request.cookies.get(COOKIE)
    if session_id:
        try:
            await state.sessions.close(session_id)
        except SessionsUnavailable:
            return _unavailable()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(COOKIE, path="/admin")
    return response


@router.get("", include_in_schema=False)
async def dashboard_page(request: Request, state: State) -> Response:
    try:
        principal = await _session_principal(request, state)
    except SessionsUnavailable:
        principal = None
    if principal is None:
        return RedirectResponse("/admin/login", status_code=status.HTTP_303_SEE_OTHER)
    return _page("dashboard.html")


async def _snapshot(state: AppState) -> dict[str, Any]:
    body = await dashboard.snapshot(state.pool)
    queue = Names.from_settings(state.settings).dead_letters
    # None when the broker cannot be asked: the page says "unknown", not 0.
    body["dead_letters"] = await state.broker.queue_depth(queue) if state.broker else None
    return body


@router.get("/api/snapshot", summary="What the dashboard shows, once")
async def snapshot(state: State, _admin: AdminSession) -> Response:
    return Response(orjson.dumps(await _snapshot(state)), media_type="application/json")


@router.get(
    "/stream",
    summary="The dashboard's live feed (server-sent events: one snapshot per refresh)",
    response_class=StreamingResponse,
)
async def stream(request: Request, state: State, _admin: AdminSession) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 3000\n\n"
        while not await request.is_disconnected():
            try:
                if await _session_principal(request, state) is None:
                    yield b"event: logout\ndata: {}\n\n"
                    return
                body = await _snapshot(state)
            except Exception as exc:  # a database or Redis hiccup: say so, keep the stream
                body = {"error": type(exc).__name__}
            yield b"data: " + orjson.dumps(body) + b"\n\n"
            await asyncio.sleep(state.settings.admin_refresh_s)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
