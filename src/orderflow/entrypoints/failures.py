"""Which handler failures are worth a retry (transient) and which go to the dead letters."""

from __future__ import annotations

import asyncpg

from orderflow.service.registry import PermanentError, TransientError

_TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    TimeoutError,
    ConnectionError,
    OSError,
    asyncpg.PostgresConnectionError,  # includes a connection that went away
    asyncpg.exceptions.TransactionRollbackError,  # serialization failures, deadlocks
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.LockNotAvailableError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures a later attempt may not meet; everything else is permanent."""
    if isinstance(exc, PermanentError):
        return False
    return isinstance(exc, _TRANSIENT)
