"""The ``orderflow worker`` process: wires the saga's handlers to the consumer runtime
(``kernel.worker``) and runs its duties, supervised."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
import structlog

from orderflow.catalogue.redis_cache import RedisProductCache
from orderflow.domain import saga
from orderflow.entrypoints.bootstrap import Deps, build_registry
from orderflow.entrypoints.worker_duties import (
    deliver_webhooks,
    reconcile_stuck_orders,
    sweep_unpaid_orders,
    watch_sla,
)
from orderflow.kernel.broker import connect
from orderflow.kernel.consumer import Outcome
from orderflow.kernel.database import create_pool
from orderflow.kernel.duties import Duties
from orderflow.kernel.process import (
    broker_readiness,
    install_stop_signals,
    serve_metrics,
    settle_heap,
)
from orderflow.kernel.redis import create_redis
from orderflow.kernel.topology import Names, declare_topology
from orderflow.kernel.waiting_rooms import retire_waiting_rooms
from orderflow.kernel.worker import Worker
from orderflow.notifications import webhooks
from orderflow.observability import metrics
from orderflow.operations.watch import audit_invariants, watch_system
from orderflow.payments.provider import HttpGateway
from orderflow.settings import Settings

__all__ = ["Worker", "declare_saga_topology", "run_worker", "start_counters_at_zero"]

log = structlog.get_logger(__name__)


async def run_worker(
    settings: Settings,
    *,
    handlers: list[str] | None = None,
    metrics_port: int | None = None,
) -> None:
    """The ``orderflow worker`` process: the saga handlers, until SIGTERM or SIGINT.

    Its duties (the consumers, the sweepers, the watches) are supervised (``kernel.duties``):
    restarted after any failure, and reported on ``/healthz`` of the metrics port; ``/readyz``
    says whether its consumers are connected to the broker.
    """
    duties = Duties("worker")
    worker: Worker | None = None
    ready = broker_readiness(lambda: worker.connected if worker else None)
    serve_metrics(metrics_port, process="worker", health=duties.health, ready=ready)
    stop = install_stop_signals()
    pool = await create_pool(settings, process="worker")
    redis = create_redis(settings)
    http = httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)
    gateway = HttpGateway.from_settings(settings)
    try:
        cache = RedisProductCache(redis, ttl_s=settings.product_cache_ttl_s)
        deps = Deps(settings=settings, pool=pool, cache=cache, gateway=gateway)
        if settings.notification_webhook_url is not None:
            await webhooks.adopt_notification_url(
                pool, settings.notification_webhook_url.get_secret_value()
            )
        registry = build_registry(deps).select(handlers)
        if not registry.names:
            log.warning("worker_without_handlers")
        start_counters_at_zero(registry.names)
        worker = Worker(settings, registry, pool)
        duties.supervise("consumers", lambda: worker.run(stop))
        duties.supervise("unpaid_order_sweeper", lambda: sweep_unpaid_orders(settings, pool, stop))
        duties.supervise("sla_watch", lambda: watch_sla(settings, pool, stop))
        duties.supervise("reconciler", lambda: reconcile_stuck_orders(settings, pool, stop))
        duties.supervise("webhook_deliveries", lambda: deliver_webhooks(settings, pool, http, stop))
        duties.supervise("system_watch", lambda: watch_system(settings, pool, stop))
        duties.supervise("invariant_audit", lambda: audit_invariants(settings, pool, stop))
        settle_heap()
        try:
            await stop.wait()
        finally:
            stop.set()
            # The consumers drain what is in flight once ``stop`` is set; then the rest goes.
            await duties.stop(grace_s=settings.worker_shutdown_timeout_s + 2)
    finally:
        await pool.close()
        await redis.close()
        await http.aclose()
        await gateway.aclose()
    log.info("worker_stopped")


# Every outcome a delivery is counted under (orderflow_events_consumed_total{outcome}).
OUTCOMES: tuple[str, ...] = (
    *(o.value for o in Outcome),
    "invalid",
    "deferred",
    "retried",
    "requeued",
    "dead_lettered",
)


def start_counters_at_zero(handlers: Iterable[str]) -> None:
    """Every handler's delivery counters exist from the start, at 0: the first retry or dead
    letter is then an increase that ``rate()`` and ``increase()`` see."""
    names = list(handlers)
    metrics.start_at_zero(metrics.EVENTS_CONSUMED, names, OUTCOMES)
    metrics.start_at_zero(metrics.EVENTS_RETRIED, names)
    metrics.start_at_zero(metrics.EVENTS_DEAD_LETTERED, names)
    metrics.start_at_zero(metrics.WEBHOOK_ATTEMPTS, ("delivered", "pending", "refused"))


async def declare_saga_topology(settings: Settings) -> list[str]:
    """Declare the exchange and every saga handler's queues, and retire the retry and delay
    queues of before ADR 0028 (``orderflow migrate``)."""
    steps = saga.subscriptions(autopilot=settings.autopilot)
    connection = await connect(settings, name="orderflow-migrate")
    async with connection:
        channel = await connection.channel()
        bindings = {step.name: list(step.event_types) for step in steps}
        names = Names.from_settings(settings)
        await declare_topology(channel, names, bindings, delivery_limit=settings.delivery_limit)
        every = [step.name for step in saga.subscriptions(autopilot=True)]
        retired = await retire_waiting_rooms(connection, names, every, settings)
    if retired:
        log.info("waiting_rooms_retired", queues=len(retired))
    return sorted(bindings)
