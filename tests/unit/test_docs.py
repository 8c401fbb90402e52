from __future__ import annotations

from pathlib import Path

import pytest

from orderflow.entrypoints.docsgen import render

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("name", ["order-lifecycle.md", "event-catalogue.md"])
def test_committed_generated_docs_match_the_code(name: str) -> None:
    text = (DOCS / name).read_text()
    assert render(text) == text, f"docs/{name} is stale: run `orderflow docs docs/{name}`"
    assert "BEGIN GENERATED" in text
