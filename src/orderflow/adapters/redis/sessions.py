"""Admin dashboard sessions in Redis: a random id in a cookie, the principal behind it here.

Losing Redis logs admins out and nothing else (DESIGN: Redis holds nothing that cannot be
rebuilt). Sessions slide: each use pushes the expiry ``ttl_s`` into the future.
"""

from __future__ import annotations

import secrets
import uuid

import orjson

from orderflow.adapters.redis.client import RedisLink
from orderflow.domain.access import Principal, Role


class SessionsUnavailable(Exception):
    """Redis cannot be reached: no session can be opened or checked now."""


class SessionStore:
    """Opens, checks and closes admin sessions."""

    def __init__(self, link: RedisLink, *, ttl_s: int) -> None:
        self._link = link
        self._ttl = ttl_s

    def _key(self, session_id: str) -> str:
        return self._link.key("session", session_id)

    async def open(self, principal: Principal) -> str:
        """A new session for ``principal``; its id (256 random bits) goes in the cookie."""
        session_id = secrets.token_urlsafe(32)
        value = orjson.dumps({"key_id": str(principal.key_id), "role": principal.role.value})
        try:
            await self._link.client.set(self._key(session_id), value, ex=self._ttl)
        except Exception as exc:
            self._link.failed("session_open", exc)
            raise SessionsUnavailable from exc
        return session_id

    async def principal(self, session_id: str) -> Principal | None:
        """Who the session belongs to (and its expiry renewed), or None if it is unknown."""
        if not session_id or len(session_id) > 100:
            return None
        try:
            raw = await self._link.client.getex(self._key(session_id), ex=self._ttl)
        except Exception as exc:
            self._link.failed("session_get", exc)
            raise SessionsUnavailable from exc
        if raw is None:
            return None
        data = orjson.loads(raw)
        return Principal(key_id=uuid.UUID(data["key_id"]), role=Role(data["role"]))

    async def close(self, session_id: str) -> None:
        """End the session (logging out); an unknown id is fine."""
        try:
            await self._link.client.delete(self._key(session_id))
        except Exception as exc:
            self._link.failed("session_close", exc)
            raise SessionsUnavailable from exc
