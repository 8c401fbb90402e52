"""Webhook signing per the Standard Webhooks convention, and what a subscription may ask for.
Pure: stdlib only.

A message carries ``webhook-id`` (the delivery's id, the same on every attempt: receivers
deduplicate by it), ``webhook-timestamp`` (Unix seconds of the attempt) and
``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, one per
secret in force, space-separated. A secret is ``whsec_<base64 of 32 random bytes>``; the
HMAC key is the decoded bytes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from enum import StrEnum
from typing import Final

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (a prefix, not a secret)
# Where the payment gateway posts its webhooks on the API.
GATEWAY_WEBHOOKS_PATH: Final = "/api/v1/payment-gateway/webhooks"


class Partner(StrEnum):
    """Whom an admin's subscription is for."""

    WAREHOUSE = "warehouse"
    CARRIER = "carrier"
    SUPPLIER = "supplier"
    OTHER = "other"


def new_secret() -> str:
    """A fresh signing secret."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<signature>`` of one message under one secret."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets_in_force: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers: signed by every secret in force (the current one
    and, during a rotation's overlap, the previous one)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(s, message_id, timestamp, body) for s in secrets_in_force
        ),
    }


def verify(
    secret: str,
    message_id: str,
    timestamp: str,
    signatures: str,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = 300,
) -> str | None:
    """None when one of ``signatures`` (the ``webhook-signature`` header) signs the message
    under ``secret`` and its timestamp is within ``tolerance_s`` of ``now``; else why not."""
    try:
        sent = int(timestamp)
    except ValueError:
        return "webhook-timestamp is not a Unix time"
    if abs(now - sent) > tolerance_s:
        return "webhook-timestamp is too far from now"
    expected = signature(secret, message_id, sent, body)
    if any(hmac.compare_digest(expected, given) for given in signatures.split()):
        return None
    return "no valid signature"
