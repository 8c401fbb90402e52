"""What the database can hold: every value from outside passes these checks before it reaches a
query, so that an input PostgreSQL (or its driver) cannot represent is a 422, never a 500."""

from __future__ import annotations

from datetime import UTC, datetime

INT64_MAX = 2**63 - 1  # a PostgreSQL bigint (and the driver's int8 codec)


def utc_instant(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one is taken as UTC already).

    Raises ValueError when the instant has no UTC form that Python can represent, e.g.
    ``0001-01-01T00:00:00+23:59`` (year 0 in UTC) or ``9999-12-31T23:59:59-23:59``: the
    driver converts to UTC before sending, and that conversion would overflow.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant is out of range once converted to UTC") from None
