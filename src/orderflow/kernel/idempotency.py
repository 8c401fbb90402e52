"""Idempotency records: claimed first in the effect's transaction, answered at its end."""

from __future__ import annotations

import asyncpg

from orderflow.domain.errors import IdempotencyKeyReused, RequestInFlight
from orderflow.domain.idempotency import IdempotentRequest, RecordedResponse, Replay

# Inserts the in-flight record, or takes over an expired one. A concurrent duplicate blocks
# here on the primary key until the first transaction ends, then gets no row back.
_CLAIM = """
INSERT INTO idempotency_keys (scope, key, request_hash, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
ON CONFLICT (scope, key) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status_code = NULL, response_body = NULL,
        response_headers = '{}', created_at = now(), expires_at = EXCLUDED.expires_at
    WHERE idempotency_keys.expires_at < now()
RETURNING 1
"""

_RECORDED = """
SELECT request_hash, status_code, response_body, response_headers
FROM idempotency_keys WHERE scope = $1 AND key = $2
"""


# Appended to the unit of work's final statement, so that answering costs no round trip.
def respond_cte(first: int) -> str:
    """A CTE storing a claimed request's response; its five parameters (``respond_args``)
    are numbered from ``first``, so that the statement writing the effect carries it."""
    p = [f"${first + i}" for i in range(5)]
    return f""", answered AS (
    UPDATE idempotency_keys SET status_code = {p[0]}, response_body = {p[1]},
                                response_headers = {p[2]}
    WHERE scope = {p[3]} AND key = {p[4]}
)"""


_RESPOND = """
UPDATE idempotency_keys SET status_code = $1, response_body = $2, response_headers = $3
WHERE scope = $4 AND key = $5
"""

_PRUNE = """
DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_keys WHERE expires_at < now() LIMIT $1))
"""


async def claim(conn: asyncpg.Connection, request: IdempotentRequest) -> None:
    """Record ``request`` as in flight, or raise Replay / IdempotencyKeyReused / RequestInFlight."""
    try:
        fresh = await conn.fetchval(
            _CLAIM,
            request.scope,
            request.key,
            request.request_hash,
            request.ttl_s,
            timeout=request.wait_s,
        )
    except TimeoutError:  # asyncpg cancelled the wait; the transaction rolls back
        raise RequestInFlight(
            "a request with this Idempotency-Key is still being processed; retry later"
        ) from None
    if fresh:
        return
    found = await conn.fetchrow(_RECORDED, request.scope, request.key)
    if found is None or found["status_code"] is None:
        raise RequestInFlight("a request with this Idempotency-Key is being processed")
    if bytes(found["request_hash"]) != request.request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with a different request; use a new key"
        )
    raise Replay(
        RecordedResponse(
            status_code=found["status_code"],
            body=bytes(found["response_body"]),
            headers=dict(found["response_headers"]),
        )
    )


def respond_args(request: IdempotentRequest, response: RecordedResponse) -> list[object]:
    """The five parameters of ``respond_cte``."""
    return [
        response.status_code,
        response.body,
        response.headers,
        request.scope,
        request.key,
    ]


async def respond(
    conn: asyncpg.Connection, request: IdempotentRequest, response: RecordedResponse
) -> None:
    """Store the response of a claimed request (when no other statement can carry it)."""
    await conn.execute(_RESPOND, *respond_args(request, response))


async def prune(conn: asyncpg.Connection | asyncpg.Pool, *, batch: int = 1000) -> int:
    """Delete expired records, at most ``batch``; returns how many."""
    status = await conn.execute(_PRUNE, batch)
    return int(status.split()[-1])
