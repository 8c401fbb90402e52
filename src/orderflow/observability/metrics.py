"""Prometheus metrics shared by the processes. Labels never carry ids (cardinality)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
    "orderflow_events_retried_total", "Deliveries sent to a retry queue", ["handler"]
)
EVENTS_DEAD_LETTERED = Counter(
    "orderflow_events_dead_lettered_total", "Deliveries sent to the dead letters", ["handler"]
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
# --- Supervised duties and the event loop (service.duties) ---
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
