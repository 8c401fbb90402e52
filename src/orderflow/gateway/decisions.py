"""What the simulated provider decides for a payment method (pure; DESIGN.md's tokens).

``pm_approve`` is authorized, ``pm_decline`` declined, ``pm_flaky`` fails transiently on the
first two requests under one idempotency key and is then authorized, ``pm_slow`` answers
``processing`` and is authorized later (the outcome arrives by webhook). Any other token is
declined as an unknown payment method.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    AUTHORIZE = "authorize"
    DECLINE = "decline"
    LATER = "later"  # processing now, authorized by a webhook after the slow delay
    UNAVAILABLE = "unavailable"  # a transient failure: the client retries with the same key


APPROVED = frozenset({"pm_approve", "pm_flaky", "pm_slow"})


def decide(token: str, *, failures_so_far: int, flaky_failures: int = 2) -> Outcome:
    """The outcome of an authorization request for ``token``, given how many times a request
    under the same idempotency key has already failed transiently."""
    if token == "pm_flaky" and failures_so_far < flaky_failures:
        return Outcome.UNAVAILABLE
    if token == "pm_slow":
        return Outcome.LATER
    if token in APPROVED:
        return Outcome.AUTHORIZE
    return Outcome.DECLINE


def decline_reason(token: str) -> str:
    """Why ``token`` is declined."""
    return "card_declined" if token == "pm_decline" else "unknown_payment_method"
