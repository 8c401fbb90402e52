"""The pure layer's guard is on: a connection attempt from a unit test fails it."""

from __future__ import annotations

import asyncio
import socket

import pytest


def test_a_blocking_connection_is_refused() -> None:
    with pytest.raises(AssertionError, match="move the test to tests/integration"):
        socket.create_connection(("127.0.0.1", 5432), timeout=1)


async def test_an_asyncio_connection_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"127\.0\.0\.1"):
        await asyncio.open_connection("127.0.0.1", 6379)
