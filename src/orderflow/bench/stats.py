"""Latency summaries and ratios, shared by every scenario."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest-rank; NaN when empty."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95, p99 and max of latencies given in seconds, in milliseconds."""
    ordered = sorted(seconds)
    out = {f"p{int(q * 100)}": percentile(ordered, q) * 1000 for q in (0.5, 0.95, 0.99)}
    out["max"] = (ordered[-1] * 1000) if ordered else math.nan
    return {k: round(v, 2) if not math.isnan(v) else v for k, v in out.items()}


def ratio(value: float, ceiling: float | None, digits: int = 3) -> float | None:
    """``value / ceiling`` rounded, or None without a usable ceiling."""
    if not ceiling or math.isnan(ceiling) or math.isnan(value):
        return None
    return round(value / ceiling, digits)
