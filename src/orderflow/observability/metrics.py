"""Prometheus metrics shared by the processes. Labels never carry ids (cardinality)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
)
from prometheus_client.registry import Collector

HTTP_REQUESTS = Counter(
    "orderflow_http_requests_total", "HTTP requests served", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "orderflow_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
ORDERS_PLACED = Counter("orderflow_orders_placed_total", "Orders accepted by the API")

# Event backbone: relay and worker.
EVENTS_PUBLISHED = Counter(
    "orderflow_events_published_total", "Outbox events confirmed by the broker", ["event_type"]
)
EVENTS_UNROUTABLE = Counter(
    "orderflow_events_unroutable_total",
    "Events the broker returned: no queue bound",
    ["event_type"],
)
RELAY_BATCH_SECONDS = Histogram(
    "orderflow_relay_batch_seconds",
    "Claim, publish, confirm and mark one outbox batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENTS_CONSUMED = Counter(
    "orderflow_events_consumed_total", "Deliveries by handler and outcome", ["handler", "outcome"]
)
EVENTS_RETRIED = Counter(
    "orderflow_events_retried_total", "Deliveries scheduled for a retry", ["handler"]
)
EVENTS_DEAD_LETTERED = Counter(
    "orderflow_events_dead_lettered_total", "Deliveries sent to the dead letters", ["handler"]
)
# Retries and deferrals scheduled in PostgreSQL (ADR 0028): waiting (the worker's system
# watch) and published when due (the relay).
SCHEDULED_WAITING = Gauge(
    "orderflow_scheduled_deliveries",
    "Retries and deferrals waiting in PostgreSQL for their time, by reason (every worker "
    "reports the same figure: aggregate with max)",
    ["reason"],
)
SCHEDULED_PUBLISHED = Counter(
    "orderflow_scheduled_published_total",
    "Scheduled deliveries (retries, deferrals) the relay published to their work queue when due",
    ["reason"],
)
HANDLER_SECONDS = Histogram(
    "orderflow_handler_duration_seconds",
    "Time to apply one delivery, or one batch of a batch handler (transaction included)",
    ["handler"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
BATCH_SIZE = Histogram(
    "orderflow_handler_batch_size",
    "Deliveries applied together in one transaction by a batch handler",
    ["handler"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
PLACEMENT_BATCH_SIZE = Histogram(
    "orderflow_placement_batch_size",
    "Orders stored together by one statement of an API process (natural batching)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
EVENT_LAG_SECONDS = Histogram(
    "orderflow_event_lag_seconds",
    "From the event's commit (occurred_at) to its handler starting",
    ["handler"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
# --- Edge (issue 6): rate limiting, product cache, Redis health ---
RATE_LIMIT_DECISIONS = Counter(
    "orderflow_rate_limit_decisions_total", "Rate-limit decisions", ["group", "decision"]
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "orderflow_rate_limit_fail_open_total",
    "Requests let through unchecked because Redis was unreachable",
)
PRODUCT_CACHE = Counter(
    "orderflow_product_cache_total", "Product cache look-ups", ["result"]
)  # result: hit | miss | error
REDIS_ERRORS = Counter("orderflow_redis_errors_total", "Failed Redis calls", ["operation"])
# --- Back office (issue 22): the worker's SLA watchdog ---
ORDERS_OVERDUE = Gauge(
    "orderflow_orders_overdue",
    "Orders past their status's SLA deadline, by status (all orders, as the worker's last "
    "sweep found them: every worker reports the same figure, so aggregate with max)",
    ["status"],
)
# --- Supervised duties and the event loop (kernel.duties) ---
DUTY_RESTARTS = Counter(
    "orderflow_duty_restarts_total", "A supervised duty failed and was started again", ["duty"]
)
DUTY_FAILING = Gauge(
    "orderflow_duty_failing",
    "1 while a supervised duty keeps failing (the process's /healthz answers 503)",
    ["duty"],
)
EVENT_LOOP_LAG = Histogram(
    "orderflow_event_loop_lag_seconds",
    "How late the event loop ran a tick it had scheduled (time it was busy or blocked)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
# --- What the system holds (the worker's system watch and periodic audit; issue 21) ---
OUTBOX_BACKLOG = Gauge(
    "orderflow_outbox_backlog",
    "Outbox events not yet published (every worker reports the same figure: aggregate with max)",
)
OUTBOX_OLDEST_AGE = Gauge(
    "orderflow_outbox_oldest_unpublished_age_seconds",
    "Age of the oldest outbox event not yet published; 0 when the outbox is drained",
)
ORDERS_BY_STATUS = Gauge("orderflow_orders", "Orders in the database, by status", ["status"])
INVARIANT_VIOLATIONS = Gauge(
    "orderflow_invariant_violations",
    "Violations the last periodic audit found, by check (orderflow audit lists them)",
    ["check"],
)
AUDIT_LAST_RUN = Gauge(
    "orderflow_audit_last_run_timestamp_seconds", "When the last periodic audit finished"
)
# --- The API's dependencies (readiness vs degradation; issue 21) ---
DEPENDENCY_UP = Gauge(
    "orderflow_dependency_up",
    "1 when the api's last check of a dependency succeeded (database, broker, redis)",
    ["dependency"],
)

# --- Live order streams and webhooks (issue 23) ---
STREAMS_OPEN = Gauge("orderflow_streams_open", "Order streams (SSE) this API process serves")
WEBHOOK_ATTEMPTS = Counter(
    "orderflow_webhook_attempts_total",
    "Webhook delivery attempts by outcome (delivered, pending: to be retried, refused)",
    ["outcome"],
)

# Which metrics each process exports on its /metrics: its own only, never another process's
# zeros (a relay exporting orderflow_http_requests_total = 0 made sums and absences lie).
_COMMON: tuple[Collector, ...] = (DUTY_RESTARTS, DUTY_FAILING, EVENT_LOOP_LAG, REDIS_ERRORS)
PROCESS_METRICS: dict[str, tuple[Collector, ...]] = {
    "api": (
        *_COMMON,
        HTTP_REQUESTS,
        HTTP_LATENCY,
        ORDERS_PLACED,
        PLACEMENT_BATCH_SIZE,
        RATE_LIMIT_DECISIONS,
        RATE_LIMIT_FAIL_OPEN,
        PRODUCT_CACHE,
        DEPENDENCY_UP,
        STREAMS_OPEN,
    ),
    "relay": (
        *_COMMON,
        EVENTS_PUBLISHED,
        EVENTS_UNROUTABLE,
        RELAY_BATCH_SECONDS,
        SCHEDULED_PUBLISHED,
    ),
    "worker": (
        *_COMMON,
        EVENTS_CONSUMED,
        EVENTS_RETRIED,
        EVENTS_DEAD_LETTERED,
        HANDLER_SECONDS,
        BATCH_SIZE,
        EVENT_LAG_SECONDS,
        PRODUCT_CACHE,
        ORDERS_OVERDUE,
        OUTBOX_BACKLOG,
        OUTBOX_OLDEST_AGE,
        SCHEDULED_WAITING,
        ORDERS_BY_STATUS,
        INVARIANT_VIOLATIONS,
        AUDIT_LAST_RUN,
        WEBHOOK_ATTEMPTS,
    ),
}


class ProcessRegistry(CollectorRegistry):
    """The /metrics of one process: the runtime's collectors (process_*, python_*) and the
    process's own metrics from ``PROCESS_METRICS``. The metrics stay in the default registry
    too (tests read them there); this only chooses what a scrape sees."""

    def __init__(self, process: str) -> None:
        super().__init__(auto_describe=False)
        self._own = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, *PROCESS_METRICS[process])

    def collect(self) -> Iterator[Metric]:
        for collector in self._own:
            yield from collector.collect()


def start_at_zero(counter: Counter, *label_sets: Iterable[str]) -> None:
    """Create ``counter``'s series for every combination of the given label values, at 0, so
    that the first event is an increase Prometheus sees (a series born at 1 is not)."""
    for values in itertools.product(*label_sets):
        counter.labels(*values)
