"""The lifecycle bench's figures: one step's latencies, hops and rates from the orders'
timelines, the knee, CPU per order and per component, the cost at the ceilings, and the
scenario's result."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from orderflow.bench.cpu import cores
from orderflow.bench.loadgen import LoadResult
from orderflow.bench.place import ratios, rss_summary
from orderflow.bench.runner import BenchRun
from orderflow.bench.stats import latency_ms, ratio
from orderflow.bench.vacuum import StandInVacuum

KNEE_P99_MS = 500.0
KNEE_SHARE = 0.95


async def load_step_figures(
    pool: asyncpg.Pool, result: LoadResult, *, offered: float, warmup_s: float
) -> dict[str, Any]:
    ids = [uuid.UUID(i) for i, _ in result.ids]
    answered = dict(result.ids)
    rows = await _timelines(pool, ids)
    firsts = {}
    for r in reversed(rows):  # oldest last: the first of each (order, event) wins
        if r["event_type"] in ("payment.initiated", "order.delivered"):
            firsts[(r["order_id"], r["event_type"])] = float(r["at"])
    e2e: list[float] = []
    initiated: list[float] = []
    for (order_id, event_type), at in firsts.items():
        delta = at - answered[str(order_id)]
        (e2e if event_type == "order.delivered" else initiated).append(max(delta, 0.0))
    start = result.started_at + warmup_s
    end = start + result.duration_s
    window = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM order_timeline WHERE event_type IN "
        "        ('order.delivered', 'order.cancelled') "
        "        AND recorded_at BETWEEN to_timestamp($1) AND to_timestamp($2)) AS completed, "
        "       (SELECT count(*) FROM outbox "
        "        WHERE created_at BETWEEN to_timestamp($1) AND to_timestamp($2)) AS events",
        start,
        end,
    )
    return {
        "offered_per_s": offered,
        "placed_per_s": round(result.per_s, 1),
        "completed_per_s": round(window["completed"] / result.duration_s, 1),
        "events_per_s": round(window["events"] / result.duration_s, 1),
        "e2e_ms": latency_ms(e2e),
        "payment_initiated_ms": latency_ms(initiated),
        "hops_ms": _hops(rows),
        "placement_ms": latency_ms(result.latencies_s),
        "errors": result.errors(),
        "max_lag_ms": round(result.max_lag_ms, 1),
        "orders": len(ids),
        "window": (start, end),
    }


async def _timelines(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    """Every timeline row of these orders, oldest first per order, with its time (epoch s) and
    the gap since the order's previous row."""
    return list(
        await pool.fetch(
            "SELECT order_id, event_type, extract(epoch FROM recorded_at) AS at, "
            "       extract(epoch FROM recorded_at - lag(recorded_at) OVER w) AS gap "
            "FROM order_timeline WHERE order_id = ANY($1::uuid[]) "
            "WINDOW w AS (PARTITION BY order_id ORDER BY id) ORDER BY order_id, id",
            ids,
        )
    )


def _hops(rows: list[asyncpg.Record]) -> dict[str, dict[str, float]]:
    """Per event type, the time from the order's previous event to this one.

    Timeline rows carry their transaction's start time, so a hop is the previous step's
    transaction, the relay, the broker and the wait for this step's transaction to begin.
    """
    gaps: dict[str, list[float]] = {}
    for r in rows:
        if r["gap"] is not None:
            gaps.setdefault(r["event_type"], []).append(max(float(r["gap"]), 0.0))
    return {event_type: latency_ms(values) for event_type, values in gaps.items()}


def keeps_up(step: dict[str, Any]) -> bool:
    p99 = step["e2e_ms"].get("p99")
    return (
        step["completed_per_s"] >= KNEE_SHARE * step["offered_per_s"]
        and p99 is not None
        and p99 < KNEE_P99_MS
        and not step.get("unfinished")
        and not step["errors"]
    )


def by_component(
    busy: dict[str, float] | None, completed_per_s: float
) -> dict[str, dict[str, float]]:
    """Per part of the system: the share of a core it kept busy, and its CPU per order."""
    if not busy or not completed_per_s:
        return {}
    return {
        part: {
            "core_pct": round(100 * cores_busy, 1),
            "ms_per_order": round(cores_busy * 1000 / completed_per_s, 2),
        }
        for part, cores_busy in busy.items()
    }


def vacuum_params(vacuuming: StandInVacuum, run: BenchRun) -> dict[str, Any]:
    """Who vacuumed the run's database, and how often the bench did."""
    if vacuuming.enabled:
        return {"by": "bench (autovacuum off)", "runs": dict(sorted(vacuuming.runs.items()))}
    return {"by": "none (autovacuum off)" if run.autovacuum_off else "autovacuum", "runs": {}}


def ceiling_cost(step: dict[str, Any], ceiling: dict[str, Any] | None) -> dict[str, Any] | None:
    """What an order of ``step`` would cost if every part of it ran at its ceiling's price,
    and the orders/s the machine's cores allow at that cost.

    An order is one placement, priced as one request of ceiling (a) (which includes its
    transaction); one confirmed publish per event, each priced as a whole round trip of
    ceiling (b) (a publish, a delivery, an ack); and the deliveries beyond one per event, each
    priced as what a second queue adds to a publish ((b2) less (b)). Nothing is counted for
    the saga's transactions or the handlers' own work, so this is a floor under the cost of an
    order and a roof over the rate: no code of ours reaches it.
    """
    prices = ceiling or {}
    a = (prices.get("http_insert") or {}).get("cpu_ms_each")
    b = (prices.get("mq_round_trips") or {}).get("cpu_ms_each")
    b2 = (prices.get("mq_two_copies") or {}).get("cpu_ms_each")
    completed = step["completed_per_s"]
    if a is None or b is None or not completed:
        return None
    events = step["events_per_s"] / completed
    extra = max((step.get("deliveries_per_order") or 0.0) - events, 0.0)
    extra_ms = max(b2 - b, 0.0) if b2 is not None else 0.0
    ms = a + events * b + extra * extra_ms
    return {
        "http_insert_ms": a,
        "mq_round_trip_ms": b,
        "extra_delivery_ms": round(extra_ms, 2),
        "events_per_order": round(events, 1),
        "extra_deliveries_per_order": round(extra, 1),
        "ms_per_order": round(ms, 2),
        "cores": cores(),
        "orders_per_s": round(cores() * 1000 / ms, 1),
    }


def lifecycle_result(
    run: BenchRun,
    steps: list[dict[str, Any]],
    queue_depths: list[tuple[float, int, int]],
    rss: list[dict[str, Any]],
    audit: dict[str, Any],
    ceiling: dict[str, Any] | None,
    rates: list[float],
    step_s: float,
) -> dict[str, Any]:
    idle, loaded = steps[0], steps[1:]
    good = [s for s in loaded if keeps_up(s)]
    knee = good[-1] if good else None
    best = knee or max(loaded, key=lambda s: s["completed_per_s"], default=idle)
    errors: dict[str, int] = {}
    for s in steps:
        for k, v in s["errors"].items():
            errors[k] = errors.get(k, 0) + v
    t0 = queue_depths[0][0] if queue_depths else 0.0
    mq = (ceiling or {}).get("mq_round_trips", {}).get("per_s")
    floor = ceiling_cost(best, ceiling)
    return {
        "scenario": "lifecycle",
        "orders_per_s": best["completed_per_s"],
        "events_per_s": best["events_per_s"],
        "latency_ms": best["e2e_ms"],
        "errors": errors,
        "ceiling": ceiling,
        "ratio_to_ceiling": {
            **ratios(best["completed_per_s"], ceiling),
            "events_to_mq_round_trips": ratio(best["events_per_s"], mq),
            "cost_at_ceilings": ratio(best["completed_per_s"], (floor or {}).get("orders_per_s")),
        },
        "cpu_ms_per_order": best.get("cpu_ms_per_order"),
        "audit_ok": bool(audit["ok"]),
        "audit": audit,
        "rss_mb": rss_summary(rss),
        "params": {
            "rates": rates,
            "step_s": step_s,
            "autopilot_delay_s": 0,
            "loadgen_processes": run.loadgen_processes,
        },
        "lifecycle": {
            "knee": (
                f"{knee['offered_per_s']:g} orders/s offered, {knee['completed_per_s']} completed/s"
                if knee
                else f"below {loaded[0]['offered_per_s']:g} orders/s: the lowest loaded step fell "
                "behind (the idle step kept up)"
                if loaded
                else "not measured: no loaded step ran"
            ),
            "cost_at_ceilings": floor,
            "idle_payment_initiated_ms": idle["payment_initiated_ms"],
            "idle_e2e_ms": idle["e2e_ms"],
            "steps": [{k: v for k, v in s.items() if k != "window"} for s in steps],
            # [seconds since the first sample, ready messages, outbox backlog]
            "queue_depths": [(round(t - t0, 1), q, b) for t, q, b in queue_depths],
        },
    }
