"""What each saga handler did during a lifecycle step, from the workers' own ``/metrics``.

The worker times every delivery it applies, or every batch of a batch handler
(``orderflow_handler_duration_seconds``), and counts the deliveries of each batch
(``orderflow_handler_batch_size``). Two scrapes, at the start and the end of a step, give per
handler: how many transactions (or statements) a second it applied, how many deliveries each
held, how long each took, and so how much of the step it had one in flight: a batch handler
applies one batch at a time, so a handler busy near 100 % is the one that cannot keep up.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

DURATION = "orderflow_handler_duration_seconds"
BATCH_SIZE = "orderflow_handler_batch_size"


@dataclass(frozen=True, slots=True)
class Totals:
    """One handler's cumulative counters, summed over the worker processes."""

    applied: float = 0.0  # deliveries applied alone, or batches
    seconds: float = 0.0
    batches: float = 0.0  # batches of a batch handler
    deliveries: float = 0.0  # deliveries in those batches

    @property
    def delivered(self) -> float:
        """Deliveries applied: those of its batches for a batch handler."""
        return self.deliveries if self.batches else self.applied

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.applied + other.applied,
            self.seconds + other.seconds,
            self.batches + other.batches,
            self.deliveries + other.deliveries,
        )


def parse(text: str) -> dict[str, Totals]:
    """Per handler, the counters of one worker's ``/metrics`` page."""
    fields: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (DURATION, BATCH_SIZE):
            continue
        for sample in family.samples:
            handler = sample.labels.get("handler")
            suffix = sample.name.removeprefix(family.name)
            if handler is None or suffix not in ("_count", "_sum"):
                continue
            fields.setdefault(handler, {})[family.name + suffix] = sample.value
    return {
        handler: Totals(
            applied=f.get(DURATION + "_count", 0.0),
            seconds=f.get(DURATION + "_sum", 0.0),
            batches=f.get(BATCH_SIZE + "_count", 0.0),
            deliveries=f.get(BATCH_SIZE + "_sum", 0.0),
        )
        for handler, f in fields.items()
    }


async def scrape(ports: list[int]) -> dict[str, Totals]:
    """The handlers' counters, summed over the workers listening on ``ports``."""
    totals: dict[str, Totals] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for port in ports:
            page = await client.get(f"http://127.0.0.1:{port}/metrics")
            page.raise_for_status()
            for handler, counted in parse(page.text).items():
                totals[handler] = totals.get(handler, Totals()) + counted
    return totals


def step_figures(
    before: dict[str, Totals], after: dict[str, Totals], seconds: float
) -> dict[str, dict[str, float]]:
    """Per handler that applied anything in between: applied/s, deliveries per batch, ms
    each and the share of the step it was busy (100 = one batch in flight all the time, in
    each worker)."""
    figures: dict[str, dict[str, float]] = {}
    for handler, end in sorted(after.items()):
        start = before.get(handler, Totals())
        applied = end.applied - start.applied
        if applied <= 0 or seconds <= 0:
            continue
        busy_s = end.seconds - start.seconds
        batches = end.batches - start.batches
        figures[handler] = {
            "applied_per_s": round(applied / seconds, 1),
            "deliveries_each": round((end.deliveries - start.deliveries) / batches, 1)
            if batches > 0
            else 1.0,
            "ms_each": round(busy_s * 1000 / applied, 2),
            "busy_pct": round(100 * busy_s / seconds, 1),
        }
    return figures


def deliveries(before: dict[str, Totals], after: dict[str, Totals]) -> float:
    """How many deliveries all handlers applied between two scrapes."""
    return sum(end.delivered - before.get(h, Totals()).delivered for h, end in after.items())
