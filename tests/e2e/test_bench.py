"""``orderflow bench`` works end to end: servers as subprocesses, load, ceilings, audit, JSON.

Short and at low concurrency: this proves the command, it does not measure anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import cast

import asyncpg
import pytest

from orderflow.bench.markdown import figures_block
from orderflow.bench.servers import command_line, process_tree
from orderflow.domain.events import HAPPY_PATH
from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.kernel.database import with_database
from orderflow.settings import Settings

pytestmark = pytest.mark.e2e


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        # Base URLs only: the bench creates (and drops) a database of its own.
        "ORDERFLOW_DATABASE_URL": settings.dsn(),
        "ORDERFLOW_RABBITMQ_URL": settings.rabbitmq_url.get_secret_value(),
    }


def _bench(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "bench", *args],
        env=_env(settings),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bench_place_with_ceilings_writes_its_json_and_passes_the_audit(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "place.json"
    done = _bench(
        settings,
        tmp_path,
        "place",
        "--duration", "2",
        "--warmup", "0.5",
        "--concurrency", "4",
        "--workers", "1",
        "--products", "50",
        "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    (result,) = doc["results"]
    assert result["scenario"] == "place"
    for key in ("orders_per_s", "latency_ms", "errors", "ceiling", "ratio_to_ceiling", "rss_mb"):
        assert key in result
    assert result["audit_ok"] is True
    assert result["orders_per_s"] > 0
    assert set(result["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert set(doc["ceiling"]) >= {"loadgen_noop", "http_insert", "mq_round_trips", "pg_commits"}
    assert result["rss_mb"]["total"] > 0
    # What each ceiling cost the machine, per operation.
    for key in ("loadgen_noop", "http_insert", "mq_round_trips", "mq_two_copies", "pg_commits"):
        assert doc["ceiling"][key]["cpu_ms_each"] > 0, key
    # the server settings that change what a run can show travel with it
    assert set(doc["run"]["postgresql"]) >= {"autovacuum", "synchronous_commit", "fsync"}
    assert doc["run"]["postgresql"]["synchronous_commit"] == "on"

    again = _bench(settings, tmp_path, "ceiling", "--duration", "1", "--warmup", "0",
                   "--concurrency", "2", "--workers", "1", "--compare", str(out))  # fmt: skip
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "Ceilings" in again.stdout


def test_bench_lifecycle_runs_orders_to_delivered_through_orderflow_up(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "lifecycle.json"
    done = _bench(
        settings,
        tmp_path,
        "lifecycle",
        "--rates", "20",
        # 4 s: the CPU split needs two readings of every process (once a second) a second
        # apart inside the step's window; a 2-s step left none on a clean CI run.
        "--duration", "4",
        "--warmup", "0.5",
        "--idle-seconds", "1",
        "--no-ceiling",
        "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (result,) = json.loads(out.read_text())["results"]
    assert result["scenario"] == "lifecycle"
    assert result["audit_ok"] is True
    steps = result["lifecycle"]["steps"]
    assert [s["label"] for s in steps] == ["idle", "20/s"]
    assert all(s["unfinished"] == 0 for s in steps)
    assert result["params"]["vacuum"]["by"] in ("bench (autovacuum off)", "autovacuum")
    registry = build_registry(
        Deps(settings.model_copy(update={"autopilot": True}), cast(asyncpg.Pool, None))
    )
    handlers = registry.names
    assert all(set(s["deepest_queues"]) <= set(handlers) for s in steps)
    # Every order was delivered, so each took one delivery per subscriber of each event of
    # the happy path, counted by the workers themselves; and it cost the machine some CPU.
    per_order = sum(len(registry.subscribers(event)) for event in HAPPY_PATH)
    assert [s["deliveries_per_order"] for s in steps] == [per_order, per_order]
    assert steps[-1]["cpu_ms_per_order"] > 0
    # ...and which parts of the system spent it, from each process's own CPU time. (Not the
    # load generator: at 20/s for 4 s it may not spend one clock tick, 10 ms, in the window.)
    parts = steps[-1]["cpu_by_component"]
    assert {"api", "relay", "worker", "postgresql"} <= set(parts)
    assert all(parts[p]["ms_per_order"] > 0 for p in ("api", "relay", "worker"))
    # Every step of the happy path applied something, seen from the worker's own metrics.
    worked = steps[-1]["handlers"]
    assert {"payments.initiate", "orders.mark_paid", "notifications.send"} <= set(worked)
    assert set(worked) <= set(handlers)
    assert all(w["applied_per_s"] > 0 and w["ms_each"] > 0 for w in worked.values())
    assert result["lifecycle"]["idle_payment_initiated_ms"]["p50"] > 0
    # Every hop of the happy path is timed, from the order's previous event to this one.
    hops = steps[-1]["hops_ms"]
    assert set(hops) == set(HAPPY_PATH[1:])
    assert all(h["p50"] >= 0 for h in hops.values())
    block = figures_block(json.loads(out.read_text()))
    assert "Where an order's time went at 20/s" in block
    assert "What each handler of the worker did at 20/s" in block
    assert "Where the machine's CPU went at 20/s" in block


SERVERS = ("up", "api", "relay", "worker")


async def test_sigterm_stops_the_bench_with_its_servers_and_drops_its_database(
    settings: Settings, tmp_path: Path
) -> None:
    database = f"orderflow_bench_term_{uuid.uuid4().hex[:8]}"
    bench = subprocess.Popen(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "bench", "lifecycle",
         "--rates", "20", "--duration", "60", "--no-ceiling", "--database", database],
        env=_env(settings),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    servers: list[int] = []
    admin = await asyncpg.connect(with_database(settings.dsn(), "postgres"))
    try:
        deadline = time.monotonic() + 60
        while len(servers) < len(SERVERS) and time.monotonic() < deadline:
            time.sleep(0.5)
            names = {p: command_line(p).split()[:2] for p in process_tree(bench.pid)}
            servers = [p for p, n in names.items() if n[1:] and n[1] in SERVERS]
        assert len(servers) == len(SERVERS), f"the servers did not start: {names}"
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(30) == 128 + signal.SIGTERM
        alive = [p for p in servers if Path(f"/proc/{p}").exists()]
        assert alive == [], f"servers outlived the bench: {[command_line(p) for p in alive]}"
        left = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", database)
        assert left == 0
    finally:  # leave nothing behind when it fails
        for pid in [bench.pid, *servers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        bench.wait()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
