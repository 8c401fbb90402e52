"""The relay and the worker together: delivery, retries, delays, dead letters, competition."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence

import aio_pika
import asyncpg
import orjson
import pytest
import structlog
import structlog.testing
from prometheus_client import REGISTRY

from orderflow.domain.events import Envelope, OrderDelivered, OrderShipped
from orderflow.kernel import outbox
from orderflow.kernel.consumer import Outcome, apply_batch
from orderflow.kernel.handlers import (
    Delivery,
    PermanentError,
    Registry,
    Subscription,
    TransactionStep,
)
from orderflow.kernel.topology import ATTEMPT, Names
from orderflow.kernel.uow import UnitOfWork, unit_of_work
from orderflow.operations.dead_letters import process
from orderflow.settings import Settings
from tests.backbone_app import EVENT, make_prepare, make_registry
from tests.integration.backbone.helpers import (
    all_applied_once,
    all_published,
    applied_counts,
    emit,
    eventually,
    process_env,
    queue_depth,
    running,
)


async def test_one_outbox_row_is_delivered_once_to_each_bound_handler(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    registry = make_registry(["alpha", "beta"])
    registry.add(make_registry(["gamma"], ("order.shipped",)).get("gamma"))
    async with running(bb_settings, pool, registry):
        [event_id] = await emit(pool, ["ok"])
        for handler in ("alpha", "beta"):
            await eventually(functools.partial(all_applied_once, pool, handler, [event_id]))
        # Then nothing more comes: the relay commits its marks all the same.
        await eventually(lambda: all_published(pool, [event_id]))
    assert await applied_counts(pool, "gamma") == {}
    attempt = await pool.fetchval(
        "SELECT attempt FROM backbone_applied WHERE event_id = $1 LIMIT 1", event_id
    )
    assert attempt == 1


async def test_a_rows_publication_time_is_when_the_relay_marked_it(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # A relay's transaction spans its batches (ADR 0013): the time a row is marked is the
    # clock's, not the start of that transaction, which can predate the row itself.
    async with running(bb_settings, pool, make_registry(["alpha"])):
        ids = []
        for _ in range(20):
            ids += await emit(pool, ["ok"])
            await asyncio.sleep(0.01)
        await eventually(lambda: all_published(pool, ids))
    early = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_id = ANY($1) AND published_at < created_at", ids
    )
    assert early == 0


async def test_idle_system_delivers_an_event_within_milliseconds(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # A long poll interval: only LISTEN/NOTIFY can make this fast.
    settings = bb_settings.model_copy(update={"relay_poll_interval_s": 30.0})
    async with running(settings, pool, make_registry(["alpha"])):
        await emit(pool, ["ok"])  # warm up connections and prepared statements
        await eventually(lambda: _count(pool, "alpha", 1))
        latencies = []
        for i in range(5):
            started = time.perf_counter()
            await emit(pool, ["ok"])
            await eventually(functools.partial(_count, pool, "alpha", i + 2), every=0.001)
            latencies.append(time.perf_counter() - started)
    print(f"idle commit->handler latency, s: {sorted(latencies)}")
    assert sorted(latencies)[2] < 0.25


async def _count(pool: asyncpg.Pool, handler: str, n: int) -> bool:
    got = await pool.fetchval("SELECT count(*) FROM backbone_applied WHERE handler = $1", handler)
    return bool(got >= n)


async def test_transient_failures_are_retried_with_backoff_and_attempts_recorded(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    async with running(bb_settings, pool, make_registry(["alpha"])):
        started = time.perf_counter()
        [event_id] = await emit(pool, ["flaky:2"])
        await eventually(lambda: all_applied_once(pool, "alpha", [event_id]))
        elapsed = time.perf_counter() - started
    attempt = await pool.fetchval(
        "SELECT attempt FROM backbone_applied WHERE event_id = $1", event_id
    )
    assert attempt == 3
    assert elapsed >= 0.1 + 0.2  # the first two retries' back-off
    retried = REGISTRY.get_sample_value("orderflow_events_retried_total", {"handler": "alpha"})
    assert (retried or 0) >= 2


async def test_poison_message_is_dead_lettered_after_bounded_attempts_without_blocking(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names.from_settings(bb_settings)
    async with running(bb_settings, pool, make_registry(["alpha"])):
        [poison] = await emit(pool, ["poison"])
        behind = await emit(pool, ["ok"] * 20)
        await eventually(lambda: all_applied_once(pool, "alpha", behind))
        # The messages behind the poison were done before its retries ran out.
        assert await queue_depth(bb_settings, names.dead_letters) == 0
        await eventually(lambda: _depth_is(bb_settings, names.dead_letters, 1))
    [letter] = await process(bb_settings, action="list")
    assert letter.message_id == str(poison)
    assert letter.handler == "alpha"
    assert letter.event_type == EVENT
    assert letter.attempt == bb_settings.retry_max_attempts
    assert "poison" in letter.error
    # When it first failed (kept through its retries) and when it failed for the last time.
    assert letter.first_failed_at is not None
    assert letter.failed_at is not None
    assert letter.first_failed_at < letter.failed_at
    assert await applied_counts(pool, "alpha") == dict.fromkeys(behind, 1)


async def _depth_is(settings: Settings, queue: str, n: int) -> bool:
    return await queue_depth(settings, queue) == n


async def test_permanent_failure_is_dead_lettered_at_once_and_can_be_replayed(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names.from_settings(bb_settings)
    async with running(bb_settings, pool, make_registry(["alpha"])):
        [bug, keep, drop] = await emit(pool, ["bug-once", "bug", "bug"])
        await eventually(lambda: _depth_is(bb_settings, names.dead_letters, 3))
        letters = {d.message_id: d for d in await process(bb_settings, action="list")}
        assert letters[str(bug)].attempt == 1
        assert "PermanentError" in letters[str(bug)].error
        # Listing leaves them where they are.
        assert await queue_depth(bb_settings, names.dead_letters) == 3

        [replayed] = await process(bb_settings, action="replay", ids=[str(bug)])
        assert replayed.message_id == str(bug)
        await eventually(lambda: all_applied_once(pool, "alpha", [bug]))
        [discarded] = await process(bb_settings, action="discard", ids=[str(drop)])
        assert discarded.message_id == str(drop)
    remaining = await process(bb_settings, action="list")
    assert [d.message_id for d in remaining] == [str(keep)]
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "orderflow.entrypoints.cli", "dead-letters", "list", "--json"],
        env=process_env(bb_settings),
        capture_output=True,
        check=True,
    )
    [line] = listed.stdout.decode().splitlines()
    assert orjson.loads(line)["message_id"] == str(keep)
    cli = [sys.executable, "-m", "orderflow.entrypoints.cli", "dead-letters"]
    dry = await asyncio.to_thread(
        subprocess.run,
        [*cli, "replay", "--all", "--handler", "alpha", "--reason", "permanent", "--dry-run"],
        env=process_env(bb_settings),
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(keep) in dry.stdout
    assert "1 would be replayed (dry run: nothing changed)" in dry.stdout
    other = await asyncio.to_thread(
        subprocess.run,
        [*cli, "list", "--handler", "beta"],
        env=process_env(bb_settings),
        capture_output=True,
        text=True,
        check=True,
    )
    assert other.stdout.strip().endswith("0 dead letters")
    assert await queue_depth(bb_settings, names.dead_letters) == 1  # the dry run left it


async def test_invalid_envelope_goes_to_the_dead_letters_at_once(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names.from_settings(bb_settings)
    with structlog.testing.capture_logs() as logs:
        async with running(bb_settings, pool, make_registry(["alpha"])):
            connection = await aio_pika.connect(
                bb_settings.rabbitmq_url.get_secret_value(), timeout=10
            )
            async with connection:
                channel = await connection.channel()
                exchange = await channel.get_exchange(bb_settings.exchange)
                await exchange.publish(
                    aio_pika.Message(b'{"not": "an envelope"}', message_id="garbage", type=EVENT),
                    EVENT,
                )
            await eventually(lambda: _depth_is(bb_settings, names.dead_letters, 1))
    [letter] = await process(bb_settings, action="list")
    assert (letter.message_id, letter.handler, letter.attempt) == ("garbage", "alpha", 1)
    assert letter.error.startswith("invalid envelope")
    # One log line says so, with what identifies the message (its body cannot be trusted).
    [line] = [entry for entry in logs if entry["event"] == "delivery_dead_lettered"]
    assert (line["message_id"], line["handler"], line["reason"]) == (
        "garbage",
        "alpha",
        "invalid_envelope",
    )


async def test_deferred_delivery_comes_back_after_its_delay_without_counting_an_attempt(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    async with running(bb_settings, pool, make_registry(["alpha"])):
        started = time.perf_counter()
        [later, now] = await emit(pool, ["defer:300", "defer:0"])
        await eventually(lambda: all_applied_once(pool, "alpha", [now]))
        await eventually(lambda: all_applied_once(pool, "alpha", [later]))
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.3
    attempts = await pool.fetch(
        "SELECT attempt FROM backbone_applied WHERE event_id = ANY($1)", [later, now]
    )
    assert [r["attempt"] for r in attempts] == [1, 1]


async def test_competing_workers_apply_each_event_once(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    async with running(bb_settings, pool, make_registry(["alpha"]), workers=3, relays=2):
        ids: list[uuid.UUID] = []
        for _ in range(5):
            ids += await emit(pool, ["ok"] * 60)
        await eventually(lambda: all_applied_once(pool, "alpha", ids))


def _published_total() -> float:
    value = REGISTRY.get_sample_value("orderflow_events_published_total", {"event_type": EVENT})
    return value or 0.0


async def test_two_relays_publish_each_row_exactly_once(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # A relay keeps the rows it claimed locked until the commit that marks them: the other
    # relay skips them meanwhile, and sees them published afterwards. Without a crash, no row
    # reaches the broker twice (the inbox would hide a duplicate, so count the confirms).
    before = _published_total()
    async with running(bb_settings, pool, make_registry(["alpha"]), relays=2):
        ids: list[uuid.UUID] = []
        for _ in range(10):
            ids += await emit(pool, ["ok"] * 30)
            await asyncio.sleep(0.02)
        await eventually(lambda: all_published(pool, ids))
        await eventually(lambda: all_applied_once(pool, "alpha", ids))
    assert _published_total() - before == len(ids)


async def test_unroutable_event_is_not_marked_published(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # Only "order.shipped" is bound: order.delivered has nowhere to go.
    registry = make_registry(["alpha"], ("order.shipped",))
    before = (
        REGISTRY.get_sample_value("orderflow_events_unroutable_total", {"event_type": EVENT}) or 0.0
    )
    async with running(bb_settings, pool, registry):
        [event_id] = await emit(pool, ["ok"])

        async def returned() -> bool:
            value = REGISTRY.get_sample_value(
                "orderflow_events_unroutable_total", {"event_type": EVENT}
            )
            return (value or 0.0) > before

        await eventually(returned)
    published = await pool.fetchval("SELECT published_at FROM outbox WHERE event_id = $1", event_id)
    assert published is None
    await pool.execute("UPDATE outbox SET published_at = now() WHERE event_id = $1", event_id)


async def test_attempt_header_name_is_stable() -> None:
    # Dead letters already in a broker carry this header; renaming it would lose their count.
    assert ATTEMPT == "x-orderflow-attempt"


async def test_published_rows_past_retention_are_pruned_and_others_kept(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    old, recent, pending = await emit(pool, ["ok", "ok", "ok"])
    await pool.execute(
        "UPDATE outbox SET published_at = now() - interval '4 days' WHERE event_id = $1", old
    )
    await pool.execute("UPDATE outbox SET published_at = now() WHERE event_id = $1", recent)

    await outbox.prune(pool, older_than_s=3 * 86400, batch=1)

    left = await pool.fetch(
        "SELECT event_id FROM outbox WHERE event_id = ANY($1)", [old, recent, pending]
    )
    assert {r["event_id"] for r in left} == {recent, pending}
    await pool.execute("UPDATE outbox SET published_at = now() WHERE event_id = $1", pending)


async def test_a_batch_handler_shares_transactions_and_a_failure_stays_its_own(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    names = Names.from_settings(bb_settings)
    batched = bb_settings.model_copy(update={"worker_batch_window_s": 0.05})
    async with running(batched, pool, make_registry(["alpha"], batch=True), workers=2):
        ok = await emit(pool, ["ok"] * 40)
        await eventually(lambda: all_applied_once(pool, "alpha", ok))
        largest = await pool.fetchval(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM backbone_applied GROUP BY txid) AS t"
        )
        assert largest > 1, "no two deliveries were applied in one transaction"
        # A batch with a bug and a transient failure in it: the others are still applied
        # once, the flaky one after its retry, and only the bug is dead-lettered.
        [bug] = await emit(pool, ["bug"])
        mixed = await emit(pool, ["ok"] * 20 + ["flaky:1"] + ["ok"] * 20)
        await eventually(lambda: all_applied_once(pool, "alpha", ok + mixed))
        await eventually(lambda: _depth_is(batched, names.dead_letters, 1))
    assert bug not in await applied_counts(pool, "alpha")
    [letter] = await process(batched, action="list")
    assert letter.message_id == str(bug)


async def test_a_handler_with_a_batch_window_of_its_own_gathers_a_trickle(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # The worker's window is 0: a batch handler without one of its own applies each delivery
    # of a trickle as it comes. One with its own window (the notifications') lingers, and
    # applies the trickle in one transaction.
    assert bb_settings.worker_batch_window_s == 0
    registry = Registry(
        [
            *make_registry(["alpha"], batch=True, batch_window_s=2.0),
            *make_registry(["beta"], batch=True),
        ]
    )
    async with running(bb_settings, pool, registry):
        trickle = []
        for _ in range(4):
            trickle += await emit(pool, ["ok"])
            await asyncio.sleep(0.15)
        await eventually(lambda: all_applied_once(pool, "alpha", trickle))
        await eventually(lambda: all_applied_once(pool, "beta", trickle))

    async def transactions(handler: str) -> int:
        return int(
            await pool.fetchval(
                "SELECT count(DISTINCT txid) FROM backbone_applied "
                "WHERE handler = $1 AND event_id = ANY($2)",
                handler,
                trickle,
            )
        )

    assert await transactions("alpha") == 1
    assert await transactions("beta") > 1


async def test_a_batch_handler_prepares_each_delivery_alone_and_batches_the_prepared(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # A slow outside call delays only its own delivery; a failing one retries only its own
    # message (nobody else is prepared twice); one with nothing to do is settled, unrecorded.
    calls: Counter[uuid.UUID] = Counter()
    batched = bb_settings.model_copy(update={"worker_batch_window_s": 0.05})
    registry = make_registry(["alpha"], batch=True, prepare=make_prepare(calls))
    names = Names.from_settings(batched)
    async with running(batched, pool, registry):
        [slow] = await emit(pool, ["call-slow:3000"])
        [flaky] = await emit(pool, ["call-flaky:1"])
        [idle] = await emit(pool, ["call-none"])
        fast = await emit(pool, ["ok"] * 30)
        await eventually(lambda: all_applied_once(pool, "alpha", [*fast, flaky]), timeout=2.5)
        assert slow not in await applied_counts(pool, "alpha"), "applied before its call ended"
        await eventually(lambda: all_applied_once(pool, "alpha", [slow]))
        await eventually(lambda: _depth_is(batched, names.handler("alpha").work, 0))
        largest = await pool.fetchval(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM backbone_applied GROUP BY txid) AS t"
        )
        assert largest > 1, "no two prepared deliveries were applied in one transaction"
    assert idle not in await applied_counts(pool, "alpha")
    assert calls[flaky] == 2
    assert {calls[e] for e in [*fast, slow, idle]} == {1}
    attempts = await pool.fetchval(
        "SELECT attempt FROM backbone_applied WHERE event_id = $1", flaky
    )
    assert attempts == 2
    assert await queue_depth(batched, names.dead_letters) == 0


async def test_apply_batch_is_all_or_nothing_and_skips_duplicates(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    spec = make_registry(["alpha"], batch=True).get("alpha")

    def delivery(carrier: str) -> Delivery:
        envelope = Envelope.wrap(OrderDelivered(carrier=carrier), order_id=uuid.uuid4())
        return Delivery(envelope=envelope, event=envelope.event())

    first, second, bad = delivery("ok"), delivery("ok"), delivery("bug")
    with pytest.raises(PermanentError):
        await apply_batch(pool, spec, [first, bad, second])
    assert await applied_counts(pool, "alpha") == {}  # rolled back, inbox rows too
    outcomes = await apply_batch(pool, spec, [first, first, second])
    assert outcomes == [Outcome.APPLIED, Outcome.DUPLICATE, Outcome.APPLIED]
    assert await apply_batch(pool, spec, [second]) == [Outcome.DUPLICATE]
    ids = [first.envelope.event_id, second.envelope.event_id]
    assert await applied_counts(pool, "alpha") == dict.fromkeys(ids, 1)


async def test_a_backlog_of_a_batch_handler_leaves_slots_to_the_other_handlers(
    bb_settings: Settings, pool: asyncpg.Pool
) -> None:
    # Two slots. The batch handler's first batch sleeps in one of them; its other deliveries
    # wait for the next batch, holding none, so the plain handler's delivery gets the other
    # slot at once instead of waiting for the slow batch to finish.
    settings = bb_settings.model_copy(update={"worker_concurrency": 2})

    async def record(uow: UnitOfWork, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            await uow.conn.execute(
                "INSERT INTO backbone_applied (event_id, handler, attempt, pid) VALUES ($1,$2,1,0)",
                delivery.envelope.event_id,
                "beta",
            )

    registry = make_registry(["alpha"], batch=True)
    registry.add(
        TransactionStep(Subscription("beta", (OrderShipped.TYPE,)), apply=record, batched=False)
    )
    async with running(settings, pool, registry):
        slow = await emit(pool, ["slow:1500"] * 3)
        alpha = Names.from_settings(settings).handler("alpha").work
        await eventually(lambda: _depth_is(settings, alpha, 0))  # all in the worker
        async with unit_of_work(pool) as uow:
            shipped = Envelope.wrap(
                OrderShipped(carrier="c", tracking_number="t"), order_id=uuid.uuid4()
            )
            uow.emit(shipped)
        await eventually(lambda: all_applied_once(pool, "beta", [shipped.event_id]))
        alpha_done = await applied_counts(pool, "alpha")
        await eventually(lambda: all_applied_once(pool, "alpha", slow))
    assert alpha_done == {}, "the plain handler waited for the batch handler's backlog"
