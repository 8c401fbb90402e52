"""RFC 9457 problem details: the one place errors become HTTP responses."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from orderflow.domain import errors
from orderflow.entrypoints.api.idempotency import IDEMPOTENCY_HEADER
from orderflow.kernel.failures import TRANSIENT, is_transient

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://orderflow.dev/problems/"

_STATUS_BY_ERROR: list[tuple[type[errors.OrderflowError], int]] = [
    (errors.NotFound, 404),
    (errors.Conflict, 409),  # IllegalTransition is a Conflict
    (errors.InvalidRequest, 422),
    (errors.Unauthenticated, 401),
    (errors.Forbidden, 403),
    (errors.TooManyStreams, 429),
]

log = structlog.get_logger(__name__)

_PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}


def documented(description: str) -> dict[str, Any]:
    """An OpenAPI response entry for a problem+json answer."""
    return {"description": description, "content": {PROBLEM_JSON: {"schema": _PROBLEM_SCHEMA}}}


# The answers of every back-office route that needs a session (OpenAPI): the session cookie, not
# a bearer key, authenticates there.
SESSION_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: documented(
        "No back-office session, or it ended: logged out, idle or absolute lifetime, key revoked"
    ),
    403: documented("A write without the session's CSRF token, or the role may not do this"),
    503: documented("The session store or the database did not answer; retry after Retry-After"),
}

# The answers of the edge, documented on every API router (OpenAPI).
EDGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: documented("No API key where one is needed, or a malformed, unknown or revoked key"),
    403: documented("The key's role may not do this"),
    429: documented("Rate limit exceeded; see Retry-After and the RateLimit headers"),
    503: documented(
        "The database (or another service the request needs) did not answer; "
        "retry after Retry-After"
    ),
}
# The answers a route can give because of what it takes, added by ProblemRoute.
BODY_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: documented("The request body is not valid JSON"),
    413: documented("The request body is larger than ORDERFLOW_MAX_BODY_BYTES"),
    415: documented("The request body is not JSON (Content-Type: application/json)"),
}
# Any route with parameters or a body: FastAPI's default 422 entry describes its own
# HTTPValidationError body, which this API never sends.
VALIDATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: documented("The request is invalid; `errors` lists each problem with its location"),
}
# Actions that move an order: the state machine may not allow them from its current status.
TRANSITION_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: documented("Not allowed from the order's current status (illegal transition)"),
}
IDEMPOTENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: documented(
        f"A request with the same {IDEMPOTENCY_HEADER} is still running, or the request "
        "clashes with the current state (see the description)"
    ),
}


# Any route that names a resource in its path: it may not exist, or not be the caller's.
NOT_FOUND_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: documented("No such resource, or one the caller may not see (another customer's)"),
}


class ProblemRoute(APIRoute):
    """A route that also documents the problems its path, body or Idempotency-Key can cause."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        implied: dict[int | str, dict[str, Any]] = {}
        if _anywhere(self.dependant, lambda d: bool(d.path_params)):
            implied |= NOT_FOUND_RESPONSES
        if self.body_field is not None:
            implied |= BODY_RESPONSES
            if not self.path.startswith("/api/"):  # the JSON-only rule is the API's
                implied.pop(415)
        if self.body_field is not None or _anywhere(self.dependant, _takes_parameters):
            implied |= VALIDATION_RESPONSES
        if _anywhere(self.dependant, _takes_idempotency_key):
            implied |= IDEMPOTENT_RESPONSES
        self.responses = {**implied, **self.responses}  # what the route declares wins


def _anywhere(dependant: Dependant, holds: Callable[[Dependant], bool]) -> bool:
    """Whether ``holds`` for the route's own parameters or for any of its dependencies' (a
    path parameter may be declared by a dependency)."""
    return holds(dependant) or any(_anywhere(sub, holds) for sub in dependant.dependencies)


def _takes_parameters(dependant: Dependant) -> bool:
    return bool(dependant.path_params or dependant.query_params or dependant.header_params)


def _takes_idempotency_key(dependant: Dependant) -> bool:
    return any(p.alias == IDEMPOTENCY_HEADER for p in dependant.header_params)


def problem(
    status: int,
    *,
    code: str,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """A problem+json response; ``extra`` members never override the standard ones."""
    body = {
        **(extra or {}),
        "type": TYPE_BASE + code,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return Response(
        orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers
    )


def _status_for(exc: errors.OrderflowError) -> int:
    for cls, status in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 400


async def _domain_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.OrderflowError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthenticated) else None
    return problem(
        _status_for(exc),
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        extra=exc.extra,
        headers=headers,
    )


def _jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        out.append(
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
        )
    return out


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    found = _jsonable_errors(exc)
    if any(err["type"] == "json_invalid" for err in found):
        return problem(
            400,
            code="malformed-json",
            title="Malformed JSON",
            detail="the request body is not valid JSON",
        )
    summary = "; ".join(f"{'.'.join(e['loc'][1:]) or e['loc'][0]}: {e['msg']}" for e in found)
    return problem(
        422,
        code="validation-error",
        title="Invalid request",
        detail=summary or "the request is invalid",
        extra={"errors": found},
    )


# Problem types of HTTP errors raised by the framework or the middleware, where the status
# phrase is not the name the API uses.
_HTTP_CODES = {413: "body-too-large", 415: "unsupported-media-type"}


async def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code) or HTTPStatus(exc.status_code).phrase.lower().replace(
        " ", "-"
    )
    return problem(
        exc.status_code, code=code, detail=str(exc.detail), headers=dict(exc.headers or {})
    )


async def _unavailable(request: Request, exc: Exception) -> Response:
    """A dependency failed in a way a later attempt may not meet (the database restarting,
    its connections exhausted or cut): 503 with Retry-After, as for the key look-up."""
    if not is_transient(exc):
        return await _unexpected(request, exc)
    log.warning("dependency_unavailable", error=repr(exc), path=request.url.path)
    return problem(
        503,
        code="temporarily-unavailable",
        title="Temporarily unavailable",
        detail="a service this request needs did not answer; retry shortly, with the same "
        f"{IDEMPOTENCY_HEADER} where the endpoint takes one (the attempt may have been applied)",
        headers={"Retry-After": "1"},
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    """A bug: one log record (``UnhandledErrorMiddleware`` handles what reaches no handler)."""
    log.error("unhandled_error", method=request.method, path=request.url.path, exc_info=exc)
    return problem(500, code="internal-error", detail="an unexpected error occurred; it was logged")


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""
    app.add_exception_handler(errors.OrderflowError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for transient in TRANSIENT:
        app.add_exception_handler(transient, _unavailable)
    # No handler for Exception itself: Starlette would answer it and then re-raise it to the
    # server, which logs it again; ``middleware.UnhandledErrorMiddleware`` takes it instead.
