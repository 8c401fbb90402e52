"""A small server-sent events client for the tests, written from the SSE specification (the
part our streams use: ``id``, ``event``, ``data``, ``retry`` fields and ``:`` comments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Frame:
    """One dispatched event; ``id`` is None when the frame had no ``id:`` field."""

    event: str = "message"
    id: str | None = None
    data: str = ""
    comment: bool = False

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class _Building:
    event: str = ""
    id: str | None = None
    data: list[str] = field(default_factory=list)


async def frames(response: httpx.Response) -> AsyncIterator[Frame]:
    """The frames of a streaming response as they arrive; comments as ``comment`` frames."""
    building = _Building()
    async for line in response.aiter_lines():
        if line == "":
            if building.data or building.id is not None or building.event:
                yield Frame(
                    event=building.event or "message",
                    id=building.id,
                    data="\n".join(building.data),
                )
            building = _Building()
            continue
        if line.startswith(":"):
            yield Frame(event="", data=line[1:].strip(), comment=True)
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            building.data.append(value)
        elif name == "id":
            building.id = value
        elif name == "event":
            building.event = value
