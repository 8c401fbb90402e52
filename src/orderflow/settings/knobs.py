"""Process configuration, read from ``ORDERFLOW_*`` environment variables."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from orderflow.domain import sla
from orderflow.settings.values import (
    DEFAULT_RATE_LIMITS,
    Environment,
    PricingName,
    one_or_more,
    over_zero,
    parse_rate,
    redact_url,
    zero_or_more,
)


class Settings(BaseSettings):
    """Every knob of every process. Defaults suit a developer machine."""

    model_config = SettingsConfigDict(env_prefix="ORDERFLOW_", env_file=".env", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    log_level: str = "INFO"
    log_json: bool | None = None  # None: JSON in production, readable in development
    # OpenTelemetry: traces go to this OTLP/HTTP collector (e.g. http://otel-collector:4318);
    # unset, no tracing SDK is installed and spans cost nothing (observability.tracing).
    otlp_endpoint: str | None = None

    # Connections. SecretStr so that a password in a URL is never printed by accident.
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/orderflow")
    rabbitmq_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # Set: a webhook subscription for this URL is made when a worker starts (docs/webhooks.md).
    notification_webhook_url: SecretStr | None = None
    db_pool_min: int = one_or_more(2)
    db_pool_max: int = one_or_more(20)
    db_command_timeout_s: float = over_zero(10.0)

    # Naming, so that test runs and deployments can share a broker without colliding.
    exchange: str = "orderflow.events"
    queue_prefix: str = "orderflow"

    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)

    # Pricing
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    pricing_strategy: PricingName = PricingName.STANDARD
    tax_rate_bp: int = Field(default=2000, ge=0, le=10000, description="basis points: 2000 = 20 %")
    discount_threshold: int = zero_or_more(10000, "minor units")
    discount_rate_bp: int = Field(default=1000, ge=0, le=10000)

    # Saga
    payment_timeout_s: float = over_zero(5.0)
    # The payment gateway (``orderflow gateway``, a provider simulator reached over HTTP).
    # Clients: where it answers, and the API key it wants.
    gateway_url: str = "http://127.0.0.1:8090"
    gateway_api_key: SecretStr = SecretStr("sk_test_orderflow")
    # Its webhooks to the API, signed per Standard Webhooks with this whsec_ secret.
    gateway_webhook_secret: SecretStr = SecretStr(
        "whsec_b3JkZXJmbG93LWRldmVsb3BtZW50LXdlYmhvb2stc2VjcmV0IQ=="
    )
    # The gateway process itself: where it listens, its own database (default: the app's,
    # in a schema of its own), where it sends webhooks, how long it keeps idempotency keys.
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8090, ge=1, le=65535)
    gateway_database_url: SecretStr | None = None
    gateway_webhook_url: str = "http://127.0.0.1:8000/api/v1/payment-gateway/webhooks"
    gateway_key_ttl_s: float = over_zero(86400.0, "idempotency keys are kept this long")
    payment_slow_delay_s: float = zero_or_more(1.0, "pm_slow: the outcome comes by webhook")
    payment_latency_ms: int = zero_or_more(0, "simulated gateway latency")
    payment_failure_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of transient gateway failures"
    )
    unpaid_order_ttl_s: float = over_zero(1800)
    expiry_sweep_interval_s: float = zero_or_more(5.0, "0: no sweeper")
    reconcile_interval_s: float = zero_or_more(
        10.0, "how often a worker looks for stuck orders; 0: never"
    )
    reconcile_stall_s: float = over_zero(
        60.0,
        "an order unchanged this long (plus the autopilot's delay in its steps) is "
        "re-driven from its last event",
    )
    autopilot: bool = False
    autopilot_delay_s: float = zero_or_more(0.0)

    # Event backbone: relay, worker, topology (issue 4)
    relay_batch_size: int = one_or_more(500)
    relay_poll_interval_s: float = over_zero(1.0, "fallback to NOTIFY")
    relay_publish_timeout_s: float = over_zero(10.0)
    relay_commit_interval_s: float = over_zero(
        0.1, "how long a relay's marks may wait for their commit"
    )
    outbox_retention_s: float = zero_or_more(3 * 86400, "keep published rows")
    outbox_prune_interval_s: float = over_zero(60.0)
    retry_base_delay_ms: int = one_or_more(1000, "first retry; doubles")
    retry_max_attempts: int = one_or_more(5, "deliveries before dead letter")
    # Retries and deferrals wait in PostgreSQL (scheduled_deliveries); the relay publishes
    # them when due (ADR 0028).
    scheduled_poll_interval_s: float = over_zero(
        0.2, "how often a relay looks for scheduled deliveries that are due"
    )
    scheduled_batch_size: int = one_or_more(100, "scheduled deliveries a relay publishes at once")
    scheduling_hold_s: float = zero_or_more(
        30.0,
        "a worker that cannot store a retry keeps trying this long, holding the message, "
        "before handing it back to its queue",
    )
    delivery_limit: int = one_or_more(20, "broker redeliveries (crashes)")
    # A batch handler applies one batch at a time, of at most its unacked deliveries: under a
    # backlog, its throughput is the prefetch per batch duration (docs/performance.md).
    worker_prefetch: int = one_or_more(256)
    worker_concurrency: int = one_or_more(64)
    worker_shutdown_timeout_s: float = over_zero(10.0)
    worker_batch_max: int = one_or_more(
        256, "deliveries a batch handler applies in one transaction"
    )
    worker_batch_window_s: float = zero_or_more(
        0.0, "how long a batch handler lingers for more deliveries"
    )
    # Notifications are 6 of an order's 13 deliveries, and no saga step waits for them: their
    # batches linger for more, so that a quiet system does not pay a statement and an ack for
    # each one (ADR 0019).
    notifications_batch_window_s: float = zero_or_more(
        0.05, "how long the notification handler lingers for more"
    )
    placement_batch_max: int = one_or_more(
        32,
        "orders an API process stores with one statement when they arrive together "
        "(natural batching, ADR 0010); 1 stores each order with its own statement",
    )
    reconnect_max_backoff_s: float = over_zero(5.0)
    # AMQP heartbeat: a peer silent for about two of these is dead, and the broker hands its
    # unacked deliveries to the other consumers (a frozen worker held them for minutes at the
    # 60-s default). Only a loop stuck for seconds misses one (docs/events.md).
    rabbitmq_heartbeat_s: int = Field(default=5, ge=1, le=600)
    broker_check_ttl_s: float = zero_or_more(2.0, "/readyz cache")
    queue_expires_ms: int | None = Field(
        default=None, ge=1000, description="x-expires on every queue; for test runs only"
    )
    # --- Edge (issue 6): authentication, rate limiting, idempotency keys, product cache ---
    # Every Redis key this process writes starts with this prefix (tests use one per run).
    redis_key_prefix: str = Field(default="orderflow", pattern=r"^[A-Za-z0-9:._-]{1,64}$")
    redis_timeout_s: float = over_zero(0.25, "connect and socket timeout")
    redis_max_connections: int = one_or_more(64)
    redis_cooldown_s: float = zero_or_more(1.0, "after a Redis failure, skip Redis for this long")
    auth_cache_ttl_s: float = zero_or_more(5.0, "a revoked key keeps working at most this long")
    auth_cache_size: int = one_or_more(10_000)
    auth_stale_s: float = zero_or_more(
        300.0, "with the database unreachable, a key verified within this long still works"
    )
    # Addresses (or CIDR networks) of the proxies whose X-Forwarded-For / -Proto are believed,
    # comma-separated; empty: none, the peer's address is the client's (docs/security.md).
    trusted_proxies: str = ""
    rate_limit_enabled: bool = True
    # Per route group, "<requests>/<seconds>" per API key (or per client address without one);
    # GCRA, so a full quota may be spent in a burst. Set some or all as JSON in
    # ORDERFLOW_RATE_LIMITS, e.g. '{"orders": "5000/1"}'.
    rate_limits: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    idempotency_ttl_s: float = over_zero(24 * 3600)
    idempotency_wait_s: float = over_zero(
        5.0, "a duplicate waits this long for the first, then 409"
    )
    idempotency_prune_interval_s: float = over_zero(300)
    product_cache_ttl_s: int = one_or_more(60, "backstop; writes invalidate")
    price_cache_ttl_s: float = zero_or_more(
        60.0, "per-process copy of products for pricing orders (versions are confirmed)"
    )
    admin_session_ttl_s: int = Field(
        default=3600, ge=60, description="an idle back-office session ends after this"
    )
    admin_session_lifetime_s: int = Field(
        default=12 * 3600, ge=60, description="a back-office session ends after this, in use or not"
    )
    admin_refresh_s: float = over_zero(2.0, "the dashboard's live feed sends a snapshot this often")
    # --- Back office (issue 22): SLA watchdog ---
    # Seconds an order may stay in a status before it is overdue, per status, as JSON in
    # ORDERFLOW_SLA_DEADLINES_S, e.g. '{"reserved": 14400}'; unnamed statuses keep their
    # defaults (domain/sla.py).
    sla_deadlines_s: dict[str, float] = Field(default_factory=sla.deadlines)
    sla_watch_interval_s: float = zero_or_more(
        15.0, "how often the worker marks overdue orders; 0: never"
    )
    system_watch_interval_s: float = zero_or_more(
        15.0,
        "how often the worker exports the outbox backlog and orders per status; 0: never",
    )
    audit_interval_s: float = zero_or_more(
        300.0,
        "how often the worker runs the invariant audit and exports its findings; 0: never",
    )
    audit_grace_s: float = zero_or_more(
        300.0, "the periodic audit checks money and stock of orders older than this"
    )

    # --- Live order streams (server-sent events) and webhooks (issue 23) ---
    stream_heartbeat_s: float = over_zero(
        15.0, "an idle stream sends a comment (and re-checks its key)"
    )
    stream_max_per_key: int = one_or_more(5, "streams one API key may hold open on one API process")
    stream_poll_interval_s: float = over_zero(
        1.0, "the feed is read from PostgreSQL at least this often"
    )
    stream_window: int = Field(
        default=4096, ge=16, description="recent feed entries each API process keeps in memory"
    )

    webhook_timeout_s: float = over_zero(5.0, "one delivery attempt")
    webhook_retry_base_s: float = over_zero(1.0, "first retry of a failed delivery; doubles")
    webhook_retry_max_s: float = over_zero(3600.0, "longest retry delay")
    webhook_disable_after: int = one_or_more(
        20, "failed attempts in a row that disable a subscription"
    )
    webhook_poll_interval_s: float = over_zero(
        1.0, "the delivery duty looks for due deliveries this often"
    )

    @field_validator("rate_limits")
    @classmethod
    def _known_groups(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - set(DEFAULT_RATE_LIMITS)
        if unknown:
            raise ValueError(f"unknown rate-limit groups {sorted(unknown)}")
        for spec in value.values():
            parse_rate(spec)
        return {**DEFAULT_RATE_LIMITS, **value}

    def rate_limit(self, group: str) -> tuple[int, float]:
        """(requests, seconds) allowed for ``group``."""
        return parse_rate(self.rate_limits[group])

    @field_validator("sla_deadlines_s")
    @classmethod
    def _known_statuses(cls, value: dict[str, float]) -> dict[str, float]:
        return sla.deadlines(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for entry in filter(None, (part.strip() for part in value.split(","))):
            ipaddress.ip_network(entry, strict=False)  # ValueError names the bad entry
        return value

    @property
    def trusted_proxy_list(self) -> list[str]:
        """``trusted_proxies`` as a list of addresses and networks."""
        return [part.strip() for part in self.trusted_proxies.split(",") if part.strip()]

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @property
    def is_production(self) -> bool:
        """Production: JSON logs by default, Secure cookies."""
        return self.environment is Environment.PRODUCTION

    @property
    def json_logs(self) -> bool:
        """Whether logs are rendered as JSON lines."""
        if self.log_json is not None:
            return self.log_json
        return self.is_production

    def dsn(self) -> str:
        """The PostgreSQL DSN, for drivers."""
        return self.database_url.get_secret_value()

    def safe_summary(self) -> dict[str, str]:
        """Connection targets with passwords masked, for start-up logs."""
        return {
            "database": redact_url(self.dsn()),
            "rabbitmq": redact_url(self.rabbitmq_url.get_secret_value()),
            "redis": redact_url(self.redis_url.get_secret_value()),
            "environment": self.environment.value,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
