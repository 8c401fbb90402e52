"""The lifecycle bench names the step whose queue backed up, and what each handler did."""

import json
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from orderflow.bench.handlers import parse, step_figures
from orderflow.bench.markdown import figures_block
from orderflow.bench.queue_sampler import QueueSampler


def test_the_deepest_queue_of_a_step_is_its_handlers_largest_sample_inside_the_window() -> None:
    sampler = QueueSampler(cast(Any, None), {"a": "q.a", "b": "q.b"})
    sampler.samples = [
        (1.0, {"a": 900}, 0),  # before the window
        (2.0, {"a": 3, "b": 40}, 0),
        (3.0, {"b": 12, "a": 70}, 0),
        (4.0, {}, 0),
        (9.0, {"b": 5000}, 0),  # after it
    ]
    assert sampler.deepest_between(2.0, 4.0) == {"a": 70, "b": 40}
    assert list(sampler.deepest_between(2.0, 4.0)) == ["a", "b"]  # deepest first
    assert sampler.deepest_between(5.0, 8.0) == {}


def test_the_figures_table_shows_each_steps_deepest_queue() -> None:
    doc = json.loads((Path(__file__).parents[2] / "docs" / "bench.json").read_text())
    (lifecycle,) = [r for r in doc["results"] if r["scenario"] == "lifecycle"]
    steps = lifecycle["lifecycle"]["steps"]
    for step in steps:
        step["deepest_queues"] = {}
    steps[-1]["deepest_queues"] = {"notifications.send": 4120, "payments.charge": 3}
    block = figures_block(doc)
    lines = block.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| offered/s"))
    column = lines[at].split(" | ").index("deepest queue")
    rows = lines[at + 2 : at + 2 + len(steps)]  # below the header and its rule
    deepest = [row.split(" | ")[column] for row in rows]
    assert deepest == ["-"] * (len(steps) - 1) + ["`notifications.send` 4120"]


def test_handler_figures_come_from_two_scrapes_of_the_workers_metrics() -> None:
    registry = CollectorRegistry()
    seconds = Histogram("orderflow_handler_duration_seconds", "", ["handler"], registry=registry)
    size = Histogram("orderflow_handler_batch_size", "", ["handler"], registry=registry)
    seconds.labels("notifications.send").observe(0.5)
    size.labels("notifications.send").observe(100)
    seconds.labels("compensation.refund").observe(0.1)
    before = parse(generate_latest(registry).decode())
    for _ in range(4):  # four batches of 50 deliveries, 0.25 s each, in 2 s
        seconds.labels("notifications.send").observe(0.25)
        size.labels("notifications.send").observe(50)
    seconds.labels("orders.mark_paid").observe(0.01)
    figures = step_figures(before, parse(generate_latest(registry).decode()), 2.0)
    assert figures == {
        "notifications.send": {
            "applied_per_s": 2.0, "deliveries_each": 50.0, "ms_each": 250.0, "busy_pct": 50.0
        },
        "orders.mark_paid": {
            "applied_per_s": 0.5, "deliveries_each": 1.0, "ms_each": 10.0, "busy_pct": 0.5
        },
    }  # fmt: skip
    # Two workers' pages add up.
    page = parse(generate_latest(registry).decode())["orders.mark_paid"]
    assert (page + page).applied == 2
