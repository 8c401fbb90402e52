"""API keys: issue, list, revoke, and verify them on the hot path without a database trip."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from orderflow.adapters.postgres import api_keys
from orderflow.adapters.postgres.api_keys import ApiKeyRow
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
class _Cached:
    row: ApiKeyRow | None  # None: no such prefix
    expires: float


class KeyVerifier:
    """Verifies presented keys against the database, remembering rows for ``ttl_s``.

    Within the TTL a key costs one SHA-256 and a dict look-up; a revocation is seen once the
    cached row expires, so ``ttl_s`` is the bound on how long a revoked key keeps working.
    Concurrent misses for one prefix share a single database look-up.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._loading: dict[str, asyncio.Future[_Cached]] = {}

    async def verify(
        self, token: str, *, before_lookup: Callable[[], Awaitable[None]] | None = None
    ) -> Principal | None:
        """The principal a key stands for, or None if it is malformed, unknown or revoked.

        ``before_lookup`` runs only when a database trip is about to be made (and may raise
        to prevent it): the hook for limiting look-ups of unknown keys.
        """
        prefix = key_prefix(token)
        if prefix is None:
            return None
        entry = self._cache.get(prefix)
        if entry is None or entry.expires <= self._clock():
            entry = await self._load(prefix, before_lookup)
        row = entry.row
        if row is None or row.revoked_at is not None or not same_key(token, row.key_hash):
            return None
        return Principal(key_id=row.id, role=row.role, customer_id=row.customer_id)

    async def is_active(self, prefix: str, key_id: uuid.UUID) -> bool:
        """Whether the key ``key_id`` (with ``prefix``) is still valid: what a session opened
        with it checks on every use, so revoking the key ends its sessions within the TTL."""
        entry = self._cache.get(prefix)
        if entry is None or entry.expires <= self._clock():
            entry = await self._load(prefix, None)
        row = entry.row
        return row is not None and row.id == key_id and row.revoked_at is None

    def forget(self, prefix: str) -> None:
        """Drop a cached key, e.g. right after revoking it in this process."""
        self._cache.pop(prefix, None)

    async def _load(
        self, prefix: str, before_lookup: Callable[[], Awaitable[None]] | None
    ) -> _Cached:
        loading = self._loading.get(prefix)
        if loading is None:
            loading = asyncio.ensure_future(self._fetch(prefix, before_lookup))
            self._loading[prefix] = loading
            loading.add_done_callback(lambda _: self._loading.pop(prefix, None))
        # shield: one caller giving up (a client went away) does not fail the others
        return await asyncio.shield(loading)

    async def _fetch(
        self, prefix: str, before_lookup: Callable[[], Awaitable[None]] | None
    ) -> _Cached:
        if before_lookup is not None:
            await before_lookup()
        row = await api_keys.by_prefix(self._pool, prefix)
        entry = _Cached(row=row, expires=self._clock() + self._ttl)
        self._remember(prefix, entry)
        return entry

    def _remember(self, prefix: str, entry: _Cached) -> None:
        self._cache.pop(prefix, None)
        if len(self._cache) >= self._max:
            # Oldest insertion first: dicts keep order, so this is a cheap FIFO eviction.
            del self._cache[next(iter(self._cache))]
        self._cache[prefix] = entry


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
