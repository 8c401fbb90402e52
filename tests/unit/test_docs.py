from __future__ import annotations

from pathlib import Path

from orderflow.entrypoints.docsgen import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "order-lifecycle.md"


def test_committed_lifecycle_doc_matches_the_state_machine() -> None:
    text = DOC.read_text()
    assert render(text) == text, "docs/order-lifecycle.md is stale: run `orderflow docs`"
    assert "stateDiagram-v2" in text
