"""Regenerates the generated parts of the docs (``orderflow docs``); a test keeps them fresh."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from orderflow import __version__
from orderflow.domain import asyncapi
from orderflow.domain.diagram import compensation_table, event_table, lifecycle_mermaid

GENERATORS: dict[str, Callable[[], str]] = {
    "lifecycle": lambda: f"```mermaid\n{lifecycle_mermaid()}```\n",
    "compensations": compensation_table,
    "events": event_table,
    "asyncapi": lambda: asyncapi.markdown(
        asyncapi.document(version=__version__, exchange="orderflow.events")
    ),
}

_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- END GENERATED -->)",
    re.DOTALL,
)


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current content."""

    def fill(match: re.Match[str]) -> str:
        body = GENERATORS[match["name"]]()
        return f"{match[1]}{body}{match[4]}"

    return _BLOCK.sub(fill, text)


def regenerate(path: Path) -> bool:
    """Rewrite ``path`` if stale; True if it changed."""
    old = path.read_text()
    new = render(old)
    if new != old:
        path.write_text(new)
    return new != old
