"""``orderflow bench`` works end to end: servers as subprocesses, load, ceilings, audit, JSON.

Short and at low concurrency: this proves the command, it does not measure anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orderflow.settings import Settings

pytestmark = pytest.mark.e2e


def _bench(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # Base URLs only: the bench creates (and drops) a database of its own.
        "ORDERFLOW_DATABASE_URL": settings.dsn(),
        "ORDERFLOW_RABBITMQ_URL": settings.rabbitmq_url.get_secret_value(),
    }
    return subprocess.run(
        [sys.executable, "-m", "orderflow.entrypoints.cli", "bench", *args],
        env=env,
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
        "--duration", "2",
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
    assert result["lifecycle"]["idle_payment_initiated_ms"]["p50"] > 0
