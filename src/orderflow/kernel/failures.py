"""Which handler failures are worth a retry (transient) and which go to the dead letters."""

from __future__ import annotations

import asyncpg

from orderflow.kernel.handlers import PermanentError, TransientError

TRANSIENT: tuple[type[Exception], ...] = (
    TransientError,
    TimeoutError,
    ConnectionError,
    OSError,
    asyncpg.PostgresConnectionError,  # includes a connection that went away
    asyncpg.exceptions.TransactionRollbackError,  # serialization failures, deadlocks
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
    asyncpg.exceptions.LockNotAvailableError,
    # A pooled connection whose server session was terminated surfaces as a client-side error
    # ("the underlying connection is closed", a protocol-state error) before the pool notices
    # it is dead; a retry gets a fresh connection. (Misuse bugs land here too; they exhaust
    # their attempts and end in the dead letters all the same.)
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def is_transient(exc: BaseException) -> bool:
    """True for failures a later attempt may not meet; everything else is permanent."""
    if isinstance(exc, PermanentError):
        return False
    return isinstance(exc, TRANSIENT)
