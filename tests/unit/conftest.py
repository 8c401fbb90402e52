"""The pure test layer: no service, no connection. Opening one here fails the test.

``make test-fast`` runs this directory alone in a few seconds; a test that needs PostgreSQL,
RabbitMQ, Redis or another process belongs in tests/integration.
"""

from __future__ import annotations

import socket
from collections.abc import Generator, Iterator
from typing import Any

import pytest


class ConnectionInPureTest(AssertionError):
    """A test (or a module it imports) in tests/unit tried to open a connection."""


def _refuse(sock: socket.socket, address: Any, *_: Any) -> Any:
    raise ConnectionInPureTest(
        f"tests/unit opened a connection to {address!r}: move the test to tests/integration"
    )


def _guarded() -> pytest.MonkeyPatch:
    patch = pytest.MonkeyPatch()
    # Every client (asyncpg, aio-pika, redis, httpx, socket.create_connection) ends in one of
    # these two; asyncio's own self-pipe uses socketpair(), which connects nothing.
    patch.setattr(socket.socket, "connect", _refuse)
    patch.setattr(socket.socket, "connect_ex", _refuse)
    return patch


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    """Importing a unit test module (and what it imports) opens no connection either."""
    patch = _guarded()
    try:
        return (yield)
    finally:
        patch.undo()


@pytest.fixture(autouse=True)
def no_connections() -> Iterator[None]:
    """Each unit test runs with connecting refused."""
    patch = _guarded()
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def broker_cleanup() -> None:
    """The pure layer declares no queues: nothing to delete (and no broker to ask)."""
