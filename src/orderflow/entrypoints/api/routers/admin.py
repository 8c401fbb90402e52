"""The back office: log in with an admin or staff key, then watch and operate the system.

``/admin/login`` exchanges a key for a session (Redis, cookie ``orderflow_admin``: HttpOnly,
SameSite=Strict, Secure in production). The session is bound to its key (a revoked key ends
it within ``ORDERFLOW_AUTH_CACHE_TTL_S``), slides by ``ORDERFLOW_ADMIN_SESSION_TTL_S`` and ends
after ``ORDERFLOW_ADMIN_SESSION_LIFETIME_S`` whatever the use. Every write carries the
session's CSRF token in ``X-CSRF-Token`` (the login, a token of its own: double submit).

``/admin`` is one static page whose script reads JSON under ``/admin/api`` and follows
``/admin/stream`` (server-sent events). It builds the DOM with ``textContent`` only and is
served with a strict Content-Security-Policy. The orders, dead-letter and operations routes
live in ``admin_orders``, ``admin_dead_letters`` and ``admin_ops``; the session dependencies
are here.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.responses import FileResponse, RedirectResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from orderflow.access.sessions import Session, SessionsUnavailable
from orderflow.domain.access import Role, key_prefix
from orderflow.domain.errors import Forbidden, Unauthenticated
from orderflow.entrypoints.api.deps import AppState, State
from orderflow.entrypoints.api.problems import SESSION_RESPONSES, ProblemRoute, problem
from orderflow.kernel.topology import Names
from orderflow.operations import dashboard
from orderflow.operations.sla import overdue_count

router = APIRouter(prefix="/admin", tags=["back office"], route_class=ProblemRoute)

COOKIE = "orderflow_admin"
LOGIN_COOKIE = "orderflow_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
_STATIC = Path(__file__).resolve().parent.parent / "admin_static"
_ASSETS = {"admin.js", "admin.css", "login.js"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
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
        503, code="sessions-unavailable", detail="sessions cannot be opened or checked now"
    )


async def current_session(request: Request, state: AppState) -> Session | None:
    """The live session behind the cookie: known, within its lifetimes, and its key still
    valid (a session of a revoked key is ended here); None otherwise."""
    session_id = request.cookies.get(COOKIE)
    if not session_id:
        return None
    session = await state.sessions.get(session_id)
    if session is None:
        return None
    if not await state.keys.is_active(session.key_prefix, session.key_id):
        await state.sessions.close(session_id)
        return None
    return session


async def _session(request: Request, state: State) -> Session:
    """The back-office user behind the cookie; 401 without a live session."""
    try:
        session = await current_session(request, state)
    except SessionsUnavailable:
        raise Unauthenticated("sessions cannot be checked right now; log in again") from None
    if session is None:
        raise Unauthenticated("log in at /admin/login first")
    return session


def _csrf_checked(session: Session, token: str | None) -> Session:
    if not token or not secrets.compare_digest(token, session.csrf):
        raise Forbidden(f"this action needs the session's CSRF token in {CSRF_HEADER}")
    return session


def _acting(*roles: Role) -> Callable[..., Awaitable[Session]]:
    """A write by one of ``roles``, with the session's CSRF token."""

    async def dependency(
        session: Annotated[Session, Depends(_session)],
        x_csrf_token: Annotated[str | None, Header()] = None,
    ) -> Session:
        if session.role not in roles:
            raise Forbidden(f"a {session.role} session may not do this")
        return _csrf_checked(session, x_csrf_token)

    return dependency


# Reading the back office: staff and admins.
BackOffice = Annotated[Session, Depends(_session)]
# Warehouse and carrier actions: staff and admins, with the CSRF token.
StaffAction = Annotated[Session, Depends(_acting(Role.STAFF, Role.ADMIN))]
# Everything else that changes something: admins only, with the CSRF token.
AdminAction = Annotated[Session, Depends(_acting(Role.ADMIN))]


def actor(session: Session) -> str:
    """How a back-office user is named in records: role and key prefix, never the key."""
    return f"{session.role.value}:{session.key_prefix}"


def _page(name: str) -> FileResponse:
    return FileResponse(_STATIC / name, headers=SECURITY_HEADERS)


@router.get("/login", include_in_schema=False)
async def login_page() -> FileResponse:
    return _page("login.html")


@router.get("/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in _ASSETS:
        return problem(404, code="not-found", detail=f"no asset {name!r}")
    return _page(name)


@router.get("/api/login-token", summary="A CSRF token for the login form (double submit)")
async def login_token(state: State) -> Response:
    token = secrets.token_urlsafe(32)
    response = Response(orjson.dumps({"csrf": token}), media_type="application/json")
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=state.settings.is_production,
    )
    return response


@router.post(
    "/login",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Open a back-office session with an admin or staff API key",
    responses={
        401: {"description": "unknown or revoked key"},
        403: {"description": "a customer key, or no CSRF token"},
    },
)
async def login(
    body: LoginIn,
    request: Request,
    state: State,
    x_csrf_token: Annotated[str | None, Header()] = None,
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not x_csrf_token or not secrets.compare_digest(expected, x_csrf_token):
        raise Forbidden(f"the login needs the token of GET /admin/api/login-token in {CSRF_HEADER}")
    token = body.api_key.strip()
    principal = await state.keys.verify(token)
    if principal is None:
        raise Unauthenticated("the API key is unknown or revoked")
    if principal.role not in (Role.ADMIN, Role.STAFF):
        raise Forbidden("the back office is for admin and staff keys")
    try:
        session_id, _ = await state.sessions.open(principal, key_prefix=key_prefix(token) or "")
    except SessionsUnavailable:
        return _unavailable()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=state.settings.admin_session_lifetime_s,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=state.settings.is_production,
    )
    response.delete_cookie(LOGIN_COOKIE, path="/admin")
    return response


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End the session")
async def logout(
    request: Request,
    state: State,
    session: BackOffice,
    x_csrf_token: Annotated[str | None, Header()] = None,
) -> Response:
    _csrf_checked(session, x_csrf_token)
    try:
        await state.sessions.close(request.cookies.get(COOKIE, ""))
    except SessionsUnavailable:
        return _unavailable()
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(COOKIE, path="/admin")
    return response


@router.get(
    "/api/me",
    summary="Who is logged in, what they may do, and the CSRF token",
    responses=SESSION_RESPONSES,
)
async def me(session: BackOffice, state: State) -> dict[str, Any]:
    return {
        "role": session.role.value,
        "key_prefix": session.key_prefix,
        "csrf": session.csrf,
        "expires_at": session.expires_at,
        "idle_s": state.settings.admin_session_ttl_s,
        "may": {
            "staff_actions": session.role in (Role.STAFF, Role.ADMIN),
            "admin_actions": session.role is Role.ADMIN,
        },
    }


@router.get("", include_in_schema=False)
async def dashboard_page(request: Request, state: State) -> Response:
    try:
        session = await current_session(request, state)
    except SessionsUnavailable:
        session = None
    if session is None:
        return RedirectResponse("/admin/login", status_code=status.HTTP_303_SEE_OTHER)
    return _page("dashboard.html")


async def _snapshot(state: AppState) -> dict[str, Any]:
    body = await dashboard.snapshot(state.pool)
    body["overdue"] = await overdue_count(state.pool)
    queue = Names.from_settings(state.settings).dead_letters
    # None when the broker cannot be asked: the page says "unknown", not 0.
    body["dead_letters"] = await state.broker.queue_depth(queue) if state.broker else None
    return body


@router.get("/api/snapshot", summary="What the overview shows, once", responses=SESSION_RESPONSES)
async def snapshot(state: State, _session: BackOffice) -> Response:
    return Response(orjson.dumps(await _snapshot(state)), media_type="application/json")


@router.get(
    "/stream",
    summary="The overview's live feed (server-sent events: one snapshot per refresh)",
    response_class=StreamingResponse,
)
async def stream(request: Request, state: State, _session: BackOffice) -> StreamingResponse:
    async def events() -> AsyncIterator[bytes]:
        yield b"retry: 3000\n\n"
        while not await request.is_disconnected():
            try:
                if await current_session(request, state) is None:
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
