"""What a bench result cost in CPU: the machine's busy time, and the roof the ceilings put
over the lifecycle's rate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orderflow.bench.cpu import (
    CpuSampler,
    Processes,
    busy_seconds,
    component,
    cores,
    read_processes,
)
from orderflow.bench.handlers import Totals, deliveries
from orderflow.bench.lifecycle_figures import ceiling_cost
from orderflow.bench.markdown import figures_block
from orderflow.bench.report import compare_table


def test_busy_time_counts_user_system_irq_and_steal_but_not_idle_or_iowait(
    tmp_path: Path,
) -> None:
    stat = tmp_path / "stat"
    #                   user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 20 30 5000 700 4 6 40 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert busy_seconds(stat) == pytest.approx(200 / os.sysconf("SC_CLK_TCK"))
    assert busy_seconds(tmp_path / "missing") is None


def test_the_sampler_averages_busy_cores_between_its_first_and_last_sample_in_a_window() -> None:
    sampler = CpuSampler()
    sampler.samples = [(0.0, 10.0), (1.0, 10.5), (2.0, 12.0), (3.0, 13.5), (9.0, 99.0)]
    assert sampler.cores_busy(1.0, 3.0) == pytest.approx(1.5)  # 3 core-s in 2 s
    assert sampler.ms_each(1.0, 3.0, per_s=300.0) == pytest.approx(5.0)  # 1.5 cores / 300/s
    assert sampler.cores_busy(1.5, 2.5) is None  # one sample: no span
    assert sampler.ms_each(1.0, 3.0, per_s=0.0) is None


def test_deliveries_count_a_batch_handlers_deliveries_and_a_plain_handlers_applications() -> None:
    before = {"notifications.send": Totals(applied=2, seconds=1, batches=2, deliveries=30)}
    after = {
        "notifications.send": Totals(applied=5, seconds=2, batches=5, deliveries=130),
        "compensation.refund": Totals(applied=3, seconds=0.3),
    }
    assert deliveries(before, after) == 100 + 3


def test_the_roof_prices_a_placement_a_round_trip_per_event_and_the_other_deliveries() -> None:
    step = {"completed_per_s": 50.0, "events_per_s": 400.0, "deliveries_per_order": 13.0}
    ceiling = {
        "http_insert": {"per_s": 2000.0, "cpu_ms_each": 1.0},
        "mq_round_trips": {"per_s": 2500.0, "cpu_ms_each": 0.5},
        "mq_two_copies": {"per_s": 2000.0, "cpu_ms_each": 0.7},
    }
    roof = ceiling_cost(step, ceiling)
    assert roof is not None
    assert roof["events_per_order"] == 8.0
    assert roof["extra_deliveries_per_order"] == 5.0
    assert roof["extra_delivery_ms"] == 0.2  # what the second queue added to a publish
    assert roof["ms_per_order"] == 6.0  # 1.0 + 8 x 0.5 + 5 x 0.2
    assert roof["orders_per_s"] == round(cores() * 1000 / 6.0, 1)
    # Without (b2) the other deliveries are free: still a floor under the cost.
    del ceiling["mq_two_copies"]
    assert ceiling_cost(step, ceiling)["ms_per_order"] == 5.0  # type: ignore[index]
    assert ceiling_cost(step, None) is None
    assert ceiling_cost(step, {"http_insert": {"per_s": 1.0}}) is None  # no CPU figure
    assert ceiling_cost({"completed_per_s": 0.0, "events_per_s": 0.0}, ceiling) is None


def test_the_figures_block_prints_the_roof_and_each_steps_cost() -> None:
    roof = {
        "http_insert_ms": 0.8, "mq_round_trip_ms": 0.7, "events_per_order": 8.0,
        "extra_deliveries_per_order": 5.0, "extra_delivery_ms": 0.0, "ms_per_order": 6.4,
        "cores": 2, "orders_per_s": 312.5,
    }  # fmt: skip
    step = {
        "offered_per_s": 50.0, "placed_per_s": 50.0, "completed_per_s": 49.9,
        "events_per_s": 399.2, "e2e_ms": {"p50": 1.0, "p99": 2.0},
        "payment_initiated_ms": {"p50": 1.0}, "max_queue_depth": 0, "max_outbox_backlog": 3,
        "deliveries_per_order": 13.0, "cpu_ms_per_order": 24.5, "label": "50/s",
    }  # fmt: skip
    doc = {
        "run": {"at": "now", "cpus": 2, "python": "3.11", "note": "n"},
        "ceiling": None,
        "results": [
            {
                "scenario": "lifecycle",
                "ratio_to_ceiling": {"cost_at_ceilings": 0.16},
                "lifecycle": {"steps": [step], "knee": "50", "cost_at_ceilings": roof},
            }
        ],
    }
    block = figures_block(doc)
    assert "| 13.0 | 24.5 |" in block
    assert "at least 6.40 ms" in block
    assert "at most 312.5 orders/s" in block
    assert "| 0.16 |" in block


def test_compare_shows_the_change_in_cpu_per_order() -> None:
    def doc(at: str, cpu_ms: float) -> dict[str, Any]:
        result = {"scenario": "lifecycle", "orders_per_s": 50.0, "cpu_ms_per_order": cpu_ms}
        return {"run": {"at": at}, "results": [result]}

    console = Console(record=True, width=120)
    console.print(compare_table(doc("before", 40.0), doc("after", 30.0)))
    text = console.export_text()
    assert "cpu_ms_per_order" in text
    assert "-25.0 %" in text


def test_each_process_is_put_in_the_part_of_the_system_it_belongs_to() -> None:
    bench, servers = 100, 200
    reading = Processes(at=0.0)
    for pid, parent, command in (
        (1, 0, "/sbin/init"),
        (bench, 1, "python orderflow bench lifecycle"),
        (150, bench, "python -c from multiprocessing.spawn import spawn_main"),
        (servers, bench, "python -m orderflow.entrypoints.cli up --port 1"),
        (201, servers, "python -m orderflow.entrypoints.cli api --port 1"),
        (202, servers, "python -m orderflow.entrypoints.cli worker --metrics-port 2"),
        (300, 1, "postgres: 15/main: postgres orderflow_bench_x 127.0.0.1(1) idle"),
        (301, 1, "/usr/lib/erlang/erts-12/bin/beam.smp -W w -- -root /usr/lib/erlang"),
        (302, 1, "redis-server 127.0.0.1:6379"),
        (303, 1, "sshd: root"),
    ):
        reading.parent[pid], reading.command[pid] = parent, command
    parts = {pid: component(pid, reading, servers=servers, bench=bench) for pid in reading.parent}
    assert parts == {
        1: "other", bench: "bench", 150: "load generator", servers: "up", 201: "api",
        202: "worker", 300: "postgresql", 301: "rabbitmq", 302: "redis", 303: "other",
    }  # fmt: skip


def test_cpu_by_part_is_what_each_process_spent_between_two_readings() -> None:
    sampler = CpuSampler()
    first, last = Processes(at=10.0), Processes(at=12.0)
    for reading, worker, api in ((first, 5.0, 1.0), (last, 6.0, 1.5)):
        reading.cpu.update({2: worker, 3: api})
        reading.parent.update({2: 1, 3: 1})
        reading.command.update({2: "orderflow.entrypoints.cli worker", 3: "x"})
    last.cpu[4], last.parent[4], last.command[4] = 0.4, 0, "postgres: backend"  # new: all of it
    last.parent[1] = 0
    first.parent[1] = 0
    sampler.processes = [first, last]
    busy = sampler.by_component(10.0, 12.0, servers=1, bench=99)
    assert busy == pytest.approx({"worker": 0.5, "server": 0.25, "postgresql": 0.2})
    assert list(busy or {}) == ["worker", "server", "postgresql"]  # busiest first
    assert sampler.by_component(11.0, 12.0, servers=1, bench=99) is None  # one reading


def test_this_process_is_among_the_processes_read() -> None:
    reading = read_processes()
    me = os.getpid()
    assert reading.cpu[me] > 0
    assert "python" in reading.command[me]
    assert reading.parent[me] == os.getppid()
