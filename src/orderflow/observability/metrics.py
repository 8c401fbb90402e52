"""Prometheus metrics shared by the processes. Labels never carry ids (cardinality)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
