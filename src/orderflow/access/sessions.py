"""Back-office sessions in Redis: a random id in a cookie, the session behind it here.

A session is bound to the API key that opened it (its id and prefix: the caller checks the key
is still valid on every use, so revoking the key ends the session), carries a CSRF token for
the page's writes, slides by ``idle_s`` on each use and never outlives ``lifetime_s``.

Redis holds only SHA-256 of the session id (under ``<prefix>:session:<digest>``), so neither a
Redis dump nor ``orderflow sessions list`` reveals a cookie; the digest's first 16 hex digits
are the session's public *handle*. An index (``<prefix>:sessions``, scored by the absolute
expiry) lets the CLI list and revoke them. Losing Redis logs people out and nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import orjson

from orderflow.domain.access import Principal, Role
from orderflow.kernel.redis import RedisLink

HANDLE_LENGTH = 16


class SessionsUnavailable(Exception):
    """Redis cannot be reached: no session can be opened or checked now."""


@dataclass(frozen=True, slots=True)
class Session:
    """An open back-office session (never the id that opens it)."""

    handle: str
    key_id: uuid.UUID
    key_prefix: str
    role: Role
    csrf: str
    opened_at: float  # epoch seconds
    expires_at: float  # the absolute end, whatever the use

    @property
    def principal(self) -> Principal:
        """Who acts through this session."""
        return Principal(key_id=self.key_id, role=self.role)

    def as_dict(self) -> dict[str, object]:
        """The session as the CLI shows it (no CSRF token)."""
        return {
            "handle": self.handle,
            "key_prefix": self.key_prefix,
            "role": self.role.value,
            "opened_at": self.opened_at,
            "expires_at": self.expires_at,
        }


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Opens, checks, lists and ends back-office sessions."""

    def __init__(self, link: RedisLink, *, idle_s: int, lifetime_s: int) -> None:
        self._link = link
        self._idle = idle_s
        self._lifetime = lifetime_s

    def _key(self, digest: str) -> str:
        return self._link.key("session", digest)

    @property
    def _index(self) -> str:
        return self._link.key("sessions")

    def _failed(self, operation: str, exc: Exception) -> SessionsUnavailable:
        self._link.failed(operation, exc)
        return SessionsUnavailable(operation)

    async def open(self, principal: Principal, *, key_prefix: str) -> tuple[str, Session]:
        """A new session for ``principal``: the id (256 random bits, for the cookie) and it."""
        session_id = secrets.token_urlsafe(32)
        digest = _digest(session_id)
        now = time.time()
        session = Session(
            handle=digest[:HANDLE_LENGTH],
            key_id=principal.key_id,
            key_prefix=key_prefix,
            role=principal.role,
            csrf=secrets.token_urlsafe(32),
            opened_at=now,
            expires_at=now + self._lifetime,
        )
        value = orjson.dumps(
            {
                "key_id": str(session.key_id),
                "key_prefix": key_prefix,
                "role": session.role.value,
                "csrf": session.csrf,
                "opened_at": session.opened_at,
                "expires_at": session.expires_at,
            }
        )
        try:
            async with self._link.client.pipeline(transaction=True) as pipe:
                pipe.set(self._key(digest), value, ex=min(self._idle, self._lifetime))
                pipe.zadd(self._index, {digest: session.expires_at})
                pipe.zremrangebyscore(self._index, "-inf", now)
                await pipe.execute()
        except Exception as exc:
            raise self._failed("session_open", exc) from exc
        return session_id, session

    async def get(self, session_id: str) -> Session | None:
        """The session (its idle expiry renewed), or None if unknown, idle or past its end."""
        if not session_id or len(session_id) > 100:
            return None
        digest = _digest(session_id)
        try:
            raw = await self._link.client.getex(self._key(digest), ex=self._idle)
        except Exception as exc:
            raise self._failed("session_get", exc) from exc
        if raw is None:
            return None
        session = _parse(digest, raw)
        left = session.expires_at - time.time()
        try:
            if left <= 0:
                await self._forget([digest])
                return None
            if left < self._idle:  # the sliding expiry must not pass the absolute end
                await self._link.client.expireat(self._key(digest), int(session.expires_at) + 1)
        except Exception as exc:
            raise self._failed("session_get", exc) from exc
        return session

    async def close(self, session_id: str) -> None:
        """End the session (logging out); an unknown id is fine."""
        try:
            await self._forget([_digest(session_id)])
        except Exception as exc:
            raise self._failed("session_close", exc) from exc

    async def all(self) -> list[Session]:
        """Every open session, the oldest first (the index is pruned on the way)."""
        try:
            await self._link.client.zremrangebyscore(self._index, "-inf", time.time())
            digests = [_text(d) for d in await self._link.client.zrange(self._index, 0, -1)]
            values = (
                await self._link.client.mget([self._key(d) for d in digests]) if digests else []
            )
            gone = [d for d, v in zip(digests, values, strict=True) if v is None]
            if gone:  # ended by idling: drop them from the index too
                await self._link.client.zrem(self._index, *gone)
        except Exception as exc:
            raise self._failed("session_list", exc) from exc
        found = [_parse(d, v) for d, v in zip(digests, values, strict=True) if v is not None]
        return sorted(found, key=lambda s: s.opened_at)

    async def revoke(
        self, *, handle: str | None = None, key_prefix: str | None = None, every: bool = False
    ) -> list[Session]:
        """End the sessions with this handle (or handle prefix), of this key, or all; them."""
        ended = [
            s
            for s in await self.all()
            if every
            or (handle is not None and s.handle.startswith(handle))
            or (key_prefix is not None and s.key_prefix == key_prefix)
        ]
        if ended:
            handles = {s.handle for s in ended}
            members = [_text(d) for d in await self._link.client.zrange(self._index, 0, -1)]
            digests = [d for d in members if d[:HANDLE_LENGTH] in handles]
            await self._forget(digests)
        return ended

    async def _forget(self, digests: list[str]) -> None:
        if not digests:
            return
        async with self._link.client.pipeline(transaction=True) as pipe:
            pipe.delete(*[self._key(d) for d in digests])
            pipe.zrem(self._index, *digests)
            await pipe.execute()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _parse(digest: str, raw: bytes | str) -> Session:
    data = orjson.loads(raw)
    return Session(
        handle=digest[:HANDLE_LENGTH],
        key_id=uuid.UUID(data["key_id"]),
        key_prefix=data["key_prefix"],
        role=Role(data["role"]),
        csrf=data["csrf"],
        opened_at=data["opened_at"],
        expires_at=data["expires_at"],
    )
