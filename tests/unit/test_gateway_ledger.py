"""Comparing the payment gateway's ledger with our payments, movement by movement (pure)."""

from __future__ import annotations

import uuid
from collections import Counter

from orderflow.operations.gateway_ledger import compare
from orderflow.operations.invariants import Check

A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))


def test_ledgers_that_match_movement_by_movement_have_no_violation() -> None:
    both = Counter({(A, "authorize"): 1, (A, "capture"): 1, (B, "authorize"): 1, (B, "void"): 1})
    assert compare(both, Counter(both)) == []


def test_a_double_capture_a_missing_void_and_a_refund_we_never_saw_are_each_named() -> None:
    theirs = Counter(
        {(A, "authorize"): 1, (A, "capture"): 2, (B, "authorize"): 1, (C, "refund"): 1}
    )
    ours = Counter({(A, "authorize"): 1, (A, "capture"): 1, (B, "authorize"): 1, (B, "void"): 1})
    found = {v.order_id: v for v in compare(theirs, ours)}
    assert set(found) == {A, B, C}
    assert all(v.check is Check.GATEWAY_LEDGER for v in found.values())
    assert found[A].detail == "capture: gateway 2, ours 1"
    assert found[B].detail == "void: gateway 0, ours 1"
    assert found[C].detail == "refund: gateway 1, ours 0"
    assert [v.order_id for v in compare(theirs, ours, only=[C])] == [C]
