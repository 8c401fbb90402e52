"""The lifecycle bench names the step whose queue backed up."""

import json
from pathlib import Path
from typing import Any, cast

from orderflow.bench.lifecycle import QueueSampler
from orderflow.bench.markdown import figures_block


def test_the_deepest_queue_of_a_step_is_its_handlers_largest_sample_inside_the_window() -> None:
    sampler = QueueSampler(cast(Any, None), {"a": "q.a", "b": "q.b"})
    sampler.by_handler = [
        (1.0, {"a": 900}),  # before the window
        (2.0, {"a": 3, "b": 40}),
        (3.0, {"b": 12, "a": 70}),
        (4.0, {}),
        (9.0, {"b": 5000}),  # after it
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
    assert "| `notifications.send` 4120 |" in block
    assert block.count("| - |") == len(steps) - 1
