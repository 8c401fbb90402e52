"""The bench report: a final table, the JSON document, and the change against an earlier run."""

from __future__ import annotations

import math
import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


def document(
    results: list[dict[str, Any]],
    ceiling: dict[str, Any] | None,
    postgresql: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON document of a run: where and when (with the PostgreSQL settings that change
    what a run can show), the ceilings, one entry per scenario."""
    return {
        "run": {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "commit": _commit(),
            "note": "2 cores shared by load generator, servers, PostgreSQL and RabbitMQ",
            "postgresql": postgresql or {},
        },
        "ceiling": ceiling,
        "results": results,
        "ok": all(r.get("audit_ok", False) for r in results),
    }


def failed_result(scenario: str, exc: BaseException) -> dict[str, Any]:
    """The entry of a scenario that could not run: failed, with the reason."""
    reason = f"{type(exc).__name__}: {str(exc)[:500]}"
    return {
        "scenario": scenario,
        "audit_ok": False,
        "errors": {"did_not_run": 1},
        "audit": {"ok": False, "reason": reason},
        "notes": [f"did not run: {reason}"],
    }


def _commit() -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        out = subprocess.run(  # noqa: S603  (git, found on PATH, fixed arguments)
            [git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def load_json(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


# The ceilings, in the order they run: key, label in the console, label in the docs.
CEILINGS = (
    ("loadgen_noop", "load generator vs GET /noop", "load generator against `GET /noop`"),
    (
        "http_insert",
        "(a) HTTP minimal insert",
        "(a) HTTP minimal insert (validate + 1-row transaction)",
    ),
    (
        "mq_round_trips",
        "(b) RabbitMQ publish+confirm+ack",
        "(b) RabbitMQ: persistent publish + confirm, quorum queue, ack",
    ),
    (
        "mq_two_copies",
        "(b2) as (b), two queues per publish",
        "(b2) as (b), fanned out to two quorum queues (per publish)",
    ),
    ("pg_commits", "(c) PostgreSQL 2-row commits", "(c) PostgreSQL: 2-row transaction commits"),
)


def ceiling_table(ceiling: dict[str, Any]) -> Table:
    table = Table(title="Ceilings (same machine, same run)")
    for col in ("what", "per s", "p50 ms", "p99 ms", "max ms", "CPU ms each"):
        table.add_column(col, justify="right" if col != "what" else "left")
    for key, label, _ in CEILINGS:
        item = ceiling.get(key)
        if item and item.get("per_s") is None:
            table.add_row(label, item.get("error", "-"), "-", "-", "-", "-")
        elif item:
            lat = item["latency_ms"]
            table.add_row(
                label,
                _fmt(item["per_s"]),
                _fmt(lat["p50"]),
                _fmt(lat["p99"]),
                _fmt(lat["max"]),
                _fmt(item.get("cpu_ms_each"), 2),
            )
    return table


def results_table(results: list[dict[str, Any]]) -> Table:
    table = Table(title="Results")
    for col in (
        "scenario",
        "orders/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "errors",
        "vs (a)",
        "vs (c)",
        "vs roof",
        "RSS MB",
        "audit",
    ):
        table.add_column(col, justify="left" if col in ("scenario", "errors") else "right")
    for r in results:
        lat = r.get("latency_ms", {})
        ratios = r.get("ratio_to_ceiling", {})
        rss = r.get("rss_mb", {})
        table.add_row(
            r["scenario"],
            _fmt(r.get("orders_per_s")),
            _fmt(lat.get("p50")),
            _fmt(lat.get("p95")),
            _fmt(lat.get("p99")),
            _fmt(lat.get("max")),
            ", ".join(f"{k}: {v}" for k, v in r.get("errors", {}).items()) or "0",
            _fmt(ratios.get("http_insert"), 2),
            _fmt(ratios.get("pg_commits"), 2),
            _fmt(ratios.get("cost_at_ceilings"), 2),
            f"{_fmt(rss.get('total'))}{' (grew)' if rss.get('grew') else ''}",
            "ok" if r.get("audit_ok") else "[red]FAILED[/red]",
        )
    return table


def print_report(console: Console, doc: dict[str, Any]) -> None:
    if doc.get("ceiling"):
        console.print(ceiling_table(doc["ceiling"]))
    if doc["results"]:
        console.print(results_table(doc["results"]))
    for r in doc["results"]:
        for line in r.get("notes", []):
            console.print(f"{r['scenario']}: {line}")
        if not r.get("audit_ok"):
            console.print(f"[red]{r['scenario']}: the audit found violations: {r['audit']}[/red]")


COMPARED = ("orders_per_s", "latency_ms.p50", "latency_ms.p99", "cpu_ms_per_order", "rss_mb.total")


def _get(r: dict[str, Any], dotted: str) -> float | None:
    value: Any = r
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return float(value) if isinstance(value, int | float) else None


def compare_table(old: dict[str, Any], new: dict[str, Any]) -> Table:
    """Per scenario and figure: old, new and the relative change."""
    table = Table(title=f"Change against the run of {old.get('run', {}).get('at', '?')}")
    for col in ("scenario", "figure", "old", "new", "change"):
        table.add_column(col, justify="left" if col in ("scenario", "figure") else "right")
    before = {r["scenario"]: r for r in old.get("results", [])}
    for r in new["results"]:
        prev = before.get(r["scenario"])
        if prev is None:
            continue
        for figure in COMPARED:
            a, b = _get(prev, figure), _get(r, figure)
            if a is None or b is None:
                continue
            change = f"{(b - a) / a * 100:+.1f} %" if a else "-"
            table.add_row(r["scenario"], figure, _fmt(a), _fmt(b), change)
    return table
