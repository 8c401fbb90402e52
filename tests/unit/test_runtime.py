"""The garbage collector's settings of the long-running processes."""

from __future__ import annotations

import gc

from orderflow.kernel.process import settle_heap


def test_settle_heap_leaves_the_start_up_heap_out_of_later_collections() -> None:
    thresholds = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults (an in-process API may have settled)
        before = gc.get_freeze_count()
        kept = [[i] for i in range(1000)]  # objects that exist when the process has started
        settle_heap()
        assert gc.get_freeze_count() >= before + len(kept)
        assert gc.get_threshold()[0] > 700  # collections are rarer too
        assert gc.isenabled()  # cycles are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
