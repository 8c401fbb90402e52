"""The domain's error hierarchy. The API maps each class to one problem+json type."""

from __future__ import annotations

from typing import Any


class OrderflowError(Exception):
    """Base of every error the service layer raises on purpose."""

    code: str = "orderflow-error"
    title: str = "Request failed"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(OrderflowError):
    """The thing asked for does not exist (or is not the caller's to see)."""

    code = "not-found"
    title = "Not found"


class Conflict(OrderflowError):
    """The request is valid but clashes with the current state."""

    code = "conflict"
    title = "Conflict"


class IllegalTransition(Conflict):
    """An order was asked to move along an edge the state machine does not have."""

    code = "illegal-transition"
    title = "Illegal order transition"


class InvalidRequest(OrderflowError):
    """The request is well-formed but asks for something impossible."""

    code = "invalid-request"
    title = "Invalid request"


class UnknownProducts(InvalidRequest):
    """An order names products that do not exist."""

    code = "unknown-products"
    title = "Unknown products"


class DuplicateProducts(InvalidRequest):
    """An order lists the same product on more than one line."""

    code = "duplicate-products"
    title = "Duplicate products"


class CurrencyMismatch(InvalidRequest):
    """An order mixes products priced in different currencies."""

    code = "currency-mismatch"
    title = "Currency mismatch"


class Unauthenticated(OrderflowError):
    """No valid credentials were presented for an endpoint that needs them."""

    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(OrderflowError):
    """The caller is known but its role may not do this."""

    code = "forbidden"
    title = "Forbidden"


class IdempotencyKeyReused(InvalidRequest):
    """An ``Idempotency-Key`` was sent again with a different request."""

    code = "idempotency-key-reused"
    title = "Idempotency key reused"


class RequestInFlight(Conflict):
    """A request with the same ``Idempotency-Key`` is still being processed."""

    code = "request-in-flight"
    title = "Request in flight"


class TooManyStreams(OrderflowError):
    """A key already holds as many open streams as it may."""

    code = "too-many-streams"
    title = "Too many open streams"
