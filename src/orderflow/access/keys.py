"""API keys: issue, list, revoke, and verify them on the hot path without a database trip."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from orderflow.access import key_store as api_keys
from orderflow.access.key_store import ApiKeyRow
from orderflow.domain.access import (
    Principal,
    Role,
    hash_key,
    key_prefix,
    new_key,
    prefix_named_by,
    same_key,
)
from orderflow.domain.errors import InvalidRequest, NotFound


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``token`` is shown once and never stored."""

    row: ApiKeyRow
    token: str


async def create_key(
    pool: asyncpg.Pool, *, role: Role, customer_id: uuid.UUID | None = None, label: str = ""
) -> IssuedKey:
    """Issue a key for ``role``; a customer key belongs to exactly one customer."""
    if (role is Role.CUSTOMER) != (customer_id is not None):
        raise InvalidRequest("a customer key needs a customer id, and only a customer key has one")
    prefix, token = new_key()
    async with pool.acquire() as conn:
        try:
            row = await api_keys.insert(
                conn,
                key_id=uuid.uuid4(),
                prefix=prefix,
                key_hash=hash_key(token),
                role=role,
                customer_id=customer_id,
                label=label,
            )
        except asyncpg.ForeignKeyViolationError:
            raise InvalidRequest(f"customer {customer_id} does not exist") from None
    return IssuedKey(row=row, token=token)


async def list_keys(pool: asyncpg.Pool, *, include_revoked: bool = False) -> list[ApiKeyRow]:
    """Keys, oldest first (hashes included: callers show prefixes only)."""
    async with pool.acquire() as conn:
        return await api_keys.all_keys(conn, include_revoked=include_revoked)


async def revoke_key(pool: asyncpg.Pool, *, ident: str) -> ApiKeyRow:
    """Revoke a key by prefix, ``ofk_<prefix>``, whole key or id; verifiers drop it in their TTL."""
    # A whole key is reduced to its prefix, so an unknown one does not echo its secret.
    named = prefix_named_by(ident.strip()) or ident.strip()
    async with pool.acquire() as conn:
        found = await api_keys.revoke(conn, named)
    if found is None:
        raise NotFound(f"no API key with prefix or id {named!r}")
    return found


@dataclass(frozen=True, slots=True)
class _Known:
    """A key row as last read: trusted until ``fresh_until``, and while the database cannot
    be reached, until ``usable_until`` (stale-while-error)."""

    row: ApiKeyRow
    fresh_until: float
    usable_until: float


class KeyVerifier:
    """Verifies presented keys against the database, remembering rows for ``ttl_s``.

    Within the TTL a key costs one SHA-256 and a dict look-up; a revocation is seen once the
    cached row expires, so ``ttl_s`` is the bound on how long a revoked key keeps working.
    Concurrent misses for one prefix share a single database look-up.

    Valid keys and unknown prefixes are remembered apart, each bounded: a flood of random
    keys never pushes a valid key out. A valid key whose look-up fails (the database down or
    restarting) is still accepted as last read, for up to ``stale_s`` after that read; an
    unknown one cannot be checked and the caller answers 503.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl_s: float,
        max_entries: int,
        stale_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._stale = max(stale_s, ttl_s)
        self._max = max_entries
        self._clock = clock
        self._valid: dict[str, _Known] = {}
        self._unknown: dict[str, float] = {}  # prefix -> until when it is known not to exist
        self._loading: dict[str, asyncio.Future[ApiKeyRow | None]] = {}

    async def verify(
        self, token: str, *, before_lookup: Callable[[], Awaitable[None]] | None = None
    ) -> Principal | None:
        """The principal a key stands for, or None if it is malformed, unknown or revoked.

        ``before_lookup`` runs only when a database trip is about to be made for a prefix
        this process has never seen valid (and may raise to prevent it): the hook for
        limiting look-ups of unknown keys. A key known valid is never held back by it.
        """
        prefix = key_prefix(token)
        if prefix is None:
            return None
        row = await self._current_row(prefix, before_lookup)
        if row is None or row.revoked_at is not None or not same_key(token, row.key_hash):
            return None
        return Principal(key_id=row.id, role=row.role, customer_id=row.customer_id)

    async def is_active(self, prefix: str, key_id: uuid.UUID) -> bool:
        """Whether the key ``key_id`` (with ``prefix``) is still valid: what a session opened
        with it checks on every use, so revoking the key ends its sessions within the TTL."""
        row = await self._current_row(prefix, None)
        return row is not None and row.id == key_id and row.revoked_at is None

    def known_valid(self, prefix: str) -> bool:
        """Whether this process has seen ``prefix`` belong to a valid key (fresh or stale)."""
        return prefix in self._valid

    async def _current_row(
        self, prefix: str, before_lookup: Callable[[], Awaitable[None]] | None
    ) -> ApiKeyRow | None:
        """The key row of ``prefix`` from the cache, or the database when it is due."""
        now = self._clock()
        known = self._valid.get(prefix)
        if known is not None and known.fresh_until > now:
            return known.row
        if known is None and self._unknown.get(prefix, 0.0) > now:
            return None
        return await self._load(prefix, None if known is not None else before_lookup)

    def forget(self, prefix: str) -> None:
        """Drop a cached key, e.g. right after revoking it in this process."""
        self._valid.pop(prefix, None)
        self._unknown.pop(prefix, None)

    async def _load(
        self, prefix: str, before_lookup: Callable[[], Awaitable[None]] | None
    ) -> ApiKeyRow | None:
        loading = self._loading.get(prefix)
        if loading is None:
            loading = asyncio.ensure_future(self._fetch(prefix, before_lookup))
            self._loading[prefix] = loading
            loading.add_done_callback(lambda _: self._loading.pop(prefix, None))
        # shield: one caller giving up (a client went away) does not fail the others
        return await asyncio.shield(loading)

    async def _fetch(
        self, prefix: str, before_lookup: Callable[[], Awaitable[None]] | None
    ) -> ApiKeyRow | None:
        if before_lookup is not None:
            await before_lookup()
        try:
            row = await api_keys.by_prefix(self._pool, prefix)
        except Exception:
            known = self._valid.get(prefix)
            if known is not None and known.usable_until > self._clock():
                return known.row  # stale-while-error: the database is down, the key was fine
            raise
        now = self._clock()
        if row is None or row.revoked_at is not None:
            self._valid.pop(prefix, None)
            _remember(self._unknown, prefix, now + self._ttl, self._max)
        else:
            self._unknown.pop(prefix, None)
            known = _Known(row, fresh_until=now + self._ttl, usable_until=now + self._stale)
            _remember(self._valid, prefix, known, self._max)
        return row


def _remember(cache: dict[str, Any], prefix: str, entry: Any, limit: int) -> None:
    cache.pop(prefix, None)
    if len(cache) >= limit:
        # Oldest insertion first: dicts keep order, so this is a cheap FIFO eviction.
        del cache[next(iter(cache))]
    cache[prefix] = entry


DEMO_LABELS = ("demo-admin", "demo-customer")


async def issue_demo_keys(pool: asyncpg.Pool, *, customer_email: str) -> dict[str, str]:
    """Fresh demo keys (admin, and customer for ``customer_email``); older demo keys revoked."""
    async with pool.acquire() as conn:
        customer_id = await conn.fetchval(
            "SELECT id FROM customers WHERE lower(email) = lower($1)", customer_email
        )
        for label in DEMO_LABELS:
            await api_keys.revoke_labelled(conn, label)
    admin = await create_key(pool, role=Role.ADMIN, label=DEMO_LABELS[0])
    customer = await create_key(
        pool, role=Role.CUSTOMER, customer_id=customer_id, label=DEMO_LABELS[1]
    )
    return {"admin": admin.token, "customer": customer.token}
