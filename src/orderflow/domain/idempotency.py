"""Idempotency keys: what a repeated request must match and what it gets back. Pure data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RecordedResponse:
    """The first response to an idempotent request, replayed to its duplicates."""

    status_code: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """A request carrying an ``Idempotency-Key``, to be recorded with its effect.

    ``render`` turns the use case's result into the response body that is stored (and
    replayed); ``wait_s`` bounds how long a duplicate waits for the first one to finish.
    """

    scope: str
    key: str
    request_hash: bytes
    status_code: int
    render: Callable[[Any], bytes]
    ttl_s: float
    wait_s: float
    headers: dict[str, str] | None = None

    def record(self, result: Any) -> RecordedResponse:
        """The response to store for ``result``."""
        return RecordedResponse(
            status_code=self.status_code,
            body=self.render(result),
            headers=self.headers or {"content-type": "application/json"},
        )


class Replay(Exception):
    """The request repeats one already answered: send ``response`` again, change nothing."""

    def __init__(self, response: RecordedResponse) -> None:
        super().__init__("idempotent replay")
        self.response = response
