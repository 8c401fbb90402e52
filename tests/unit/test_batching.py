"""Natural batching (``kernel.batching``): how batches form and how they end, and the keyed
reads built on it."""

from __future__ import annotations

import asyncio

import pytest

from orderflow.kernel.batching import Coalescer, Lookup


class Recorder:
    """An ``apply`` that records its batches and can be held open."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.fail_on: int | None = None

    async def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(batch)
        await self.release.wait()
        if self.fail_on in batch:
            raise ValueError(f"refused {self.fail_on}")
        return [item * 10 for item in batch]


async def test_an_idle_coalescer_applies_a_submission_alone_and_at_once() -> None:
    apply = Recorder()
    coalescer = Coalescer(apply, max_batch=8)
    assert await coalescer.submit(1) == 10
    assert await coalescer.submit(2) == 20
    assert apply.batches == [[1], [2]]
    assert not coalescer.busy


async def test_what_arrives_during_a_batch_forms_the_next_one_up_to_the_maximum() -> None:
    apply = Recorder()
    apply.release.clear()
    coalescer = Coalescer(apply, max_batch=3)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert apply.batches == [[0]]  # in flight, held open
    rest = [asyncio.create_task(coalescer.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    apply.release.set()
    results = await asyncio.gather(first, *rest)
    assert results == [0, 10, 20, 30, 40, 50]  # each submitter gets its own result
    assert apply.batches == [[0], [1, 2, 3], [4, 5]]


async def test_a_failed_batch_fails_its_submitters_only() -> None:
    apply = Recorder()
    apply.release.clear()
    apply.fail_on = 2
    coalescer = Coalescer(apply, max_batch=2)
    first = asyncio.create_task(coalescer.submit(0))
    await asyncio.sleep(0)
    failing = [asyncio.create_task(coalescer.submit(i)) for i in (1, 2)]
    later = asyncio.create_task(coalescer.submit(3))
    await asyncio.sleep(0)
    apply.release.set()
    assert await first == 0
    for task in failing:
        with pytest.raises(ValueError, match="refused 2"):
            await task
    assert await later == 30
    assert apply.batches == [[0], [1, 2], [3]]


async def test_a_wrong_number_of_results_is_an_error_not_a_mix_up() -> None:
    async def short(batch: list[int]) -> list[int]:
        return batch[:-1]

    coalescer = Coalescer(short, max_batch=4)
    with pytest.raises(RuntimeError, match="got 0 results"):
        await coalescer.submit(1)


async def test_a_window_lingers_for_a_fuller_batch() -> None:
    apply = Recorder()
    coalescer = Coalescer(apply, max_batch=10, window_s=0.05)
    results = await asyncio.gather(*(coalescer.submit(i) for i in range(4)))
    assert results == [0, 10, 20, 30]
    assert apply.batches == [[0, 1, 2, 3]]


def test_a_batch_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError):
        Coalescer(Recorder(), max_batch=0)


async def test_reads_asked_together_are_one_fetch_and_reads_asked_later_the_next() -> None:
    fetched: list[list[str]] = []
    release = asyncio.Event()
    table = {"a": 1, "b": 2}

    async def fetch(keys: list[str]) -> dict[str, int]:
        fetched.append(keys)
        found = {k: table[k] for k in keys if k in table}  # its snapshot: when it began
        await release.wait()
        return found

    lookup: Lookup[str, int] = Lookup(fetch, max_batch=8)
    first = asyncio.ensure_future(lookup.get("a"))
    while not fetched:  # until the first read is in flight, alone
        await asyncio.sleep(0)
    table["a"] = 10  # committed after the first read began, before the next ones were asked
    later = [asyncio.ensure_future(lookup.get(k)) for k in ("a", "b", "a", "missing")]
    release.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [10, 2, 10, None]
    assert fetched == [["a"], ["a", "b", "missing"]]
