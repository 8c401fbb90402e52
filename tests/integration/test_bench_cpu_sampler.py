"""The bench's CPU sampler against a real busy process (a child interpreter spinning)."""

from __future__ import annotations

import asyncio
import sys
import time

from orderflow.bench.cpu import CpuSampler


def test_the_sampler_sees_a_core_kept_busy() -> None:
    spin = "import time\nend = time.time() + 2.0\nwhile time.time() < end: pass"

    async def spin_under_sampler() -> float | None:
        async with CpuSampler(interval_s=0.1) as sampler:
            start = time.time()
            spinner = await asyncio.create_subprocess_exec(sys.executable, "-c", spin)
            await spinner.wait()
            end = time.time()
        return sampler.cores_busy(start + 0.2, end)  # the interpreter's start-up aside

    busy = asyncio.run(spin_under_sampler())
    assert busy is not None
    assert busy > 0.5  # another process spun for the whole window
