"""The pieces the settings are made of: enumerations, rate-limit specs, redaction, and the
bounds most knobs share."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import Field


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class PricingName(StrEnum):
    STANDARD = "standard"
    TAXED = "taxed"
    DISCOUNT = "discount"


# Route groups of the rate limiter: reads, writes, order actions, failed key look-ups.
DEFAULT_RATE_LIMITS = {"read": "100/1", "write": "20/1", "orders": "50/1", "auth": "20/1"}


@lru_cache(maxsize=64)
def parse_rate(spec: str) -> tuple[int, float]:
    """``"100/60"`` -> (100, 60.0): that many requests per that many seconds."""
    count, sep, seconds = spec.partition("/")
    try:
        parsed = int(count), float(seconds)
    except ValueError:
        raise ValueError(f"a rate limit is '<requests>/<seconds>', not {spec!r}") from None
    if not sep or parsed[0] < 1 or parsed[1] <= 0:
        raise ValueError(f"a rate limit is '<requests>/<seconds>', not {spec!r}")
    return parsed


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced, safe to log."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else url


# The bounds most knobs share, in one place: a knob's declaration says its default, its floor
# and what it means.
def over_zero(default: float, description: str | None = None) -> Any:
    """A knob that must be more than 0."""
    return Field(default=default, gt=0, description=description)


def zero_or_more(default: float, description: str | None = None) -> Any:
    """A knob that may be 0 (often: off) but not negative."""
    return Field(default=default, ge=0, description=description)


def one_or_more(default: int, description: str | None = None) -> Any:
    """A count of at least 1."""
    return Field(default=default, ge=1, description=description)
