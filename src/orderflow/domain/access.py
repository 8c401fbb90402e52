"""Who is calling: roles, principals and the shape of API keys. Pure: stdlib only."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

KEY_SCHEME = "ofk"
_KEY_SHAPE = re.compile(r"^ofk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_NAMED_PREFIX = re.compile(r"^ofk_([0-9a-f]{12})$")


class Role(StrEnum):
    ADMIN = "admin"
    STAFF = "staff"
    CUSTOMER = "customer"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the key that was presented and what it may act as."""

    key_id: uuid.UUID
    role: Role
    customer_id: uuid.UUID | None = None

    @property
    def owner(self) -> uuid.UUID | None:
        """The customer whose data alone this caller may see; None sees everything."""
        return self.customer_id if self.role is Role.CUSTOMER else None

    @property
    def scope(self) -> str:
        """A stable name for the caller, used to scope idempotency keys."""
        if self.role is Role.CUSTOMER:
            return f"customer:{self.customer_id}"
        return f"key:{self.key_id}"


def new_key() -> tuple[str, str]:
    """A fresh API key and its public prefix: 48 random bits of prefix, 256 of secret."""
    prefix = secrets.token_hex(6)
    return prefix, f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"


def key_prefix(token: str) -> str | None:
    """The lookup prefix of a well-formed key, None for anything else."""
    found = _KEY_SHAPE.match(token)
    return found.group(1) if found else None


def prefix_named_by(ident: str) -> str | None:
    """The prefix an operator means by ``ofk_<prefix>`` or a whole key; None for anything else."""
    found = _NAMED_PREFIX.match(ident)
    return found.group(1) if found else key_prefix(ident)


def hash_key(token: str) -> bytes:
    """The stored form of a key: SHA-256, enough for 256-bit random secrets (no stretching)."""
    return hashlib.sha256(token.encode()).digest()


def same_key(token: str, stored_hash: bytes) -> bool:
    """Constant-time comparison of a presented key with a stored hash."""
    return secrets.compare_digest(hash_key(token), stored_hash)
