"""``orderflow chaos``: the command line of the fault suite."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orderflow.bench.chaos import services
from orderflow.bench.chaos.faults import FAULTS, Timing
from orderflow.bench.chaos.report import document, print_report, write_json
from orderflow.bench.chaos.run import ChaosParams, run_chaos
from orderflow.bench.runner import BenchRun


def chaos(
    duration: Annotated[float, typer.Option(min=10, help="seconds of load")] = 60.0,
    rate: Annotated[float, typer.Option(min=1, max=500, help="orders placed per second")] = 20.0,
    faults: Annotated[
        str,
        typer.Option(help=f"comma-separated, in order; empty: each once ({', '.join(FAULTS)})"),
    ] = "",
    spacing: Annotated[
        float | None, typer.Option(min=0, help="seconds between faults (default: spread out)")
    ] = None,
    first_fault: Annotated[float, typer.Option(min=0, help="seconds before the first")] = 5.0,
    pause: Annotated[float, typer.Option(min=0, help="seconds a killed process stays down")] = 2.0,
    broker_outage: Annotated[float, typer.Option(min=0, help="seconds of stop_app")] = 8.0,
    workers: Annotated[int, typer.Option(min=1, max=8, help="worker processes")] = 1,
    autopilot_delay: Annotated[float, typer.Option(min=0, help="autopilot step delay, s")] = 0.5,
    reconcile_stall: Annotated[
        float, typer.Option(min=1, help="ORDERFLOW_RECONCILE_STALL_S of the processes")
    ] = 15.0,
    recovery_timeout: Annotated[
        float, typer.Option(min=10, help="longest wait for every order to end")
    ] = 180.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the figures here")] = None,
    keep_db: Annotated[bool, typer.Option(help="keep the run's database")] = False,
) -> None:
    """Load the system while killing its processes and restarting PostgreSQL, RabbitMQ and
    Redis; report lost orders, duplicated effects and recovery times. Exit 1 if an invariant
    broke. It stops the machine's shared services: nothing else should rely on them meanwhile."""
    names = tuple(n.strip() for n in faults.split(",") if n.strip())
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        raise typer.BadParameter(f"unknown faults {unknown}; known: {', '.join(FAULTS)}")
    params = ChaosParams(
        duration_s=duration,
        rate=rate,
        faults=names,
        first_fault_s=first_fault,
        spacing_s=spacing,
        timing=Timing(pause_s=pause, broker_outage_s=broker_outage),
        workers=workers,
        autopilot_delay_s=autopilot_delay,
        reconcile_stall_s=reconcile_stall,
        recovery_timeout_s=recovery_timeout,
    )
    console = Console(width=None if sys.stdout.isatty() else 150)
    run = BenchRun.create(database=None, console=console, kind="chaos")
    run.keep_db = keep_db

    async def go() -> dict[str, Any]:
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        try:
            return await run_chaos(run, params)
        finally:
            # Every shared service runs again, whatever happened (an error, Ctrl-C, SIGTERM).
            restored = await services.ensure_running()
            if restored:
                console.print(f"services: {'; '.join(restored)}")
            await run.close()

    try:
        doc = document(asyncio.run(go()))
    except (asyncio.CancelledError, KeyboardInterrupt):
        console.print("chaos stopped; its processes stopped, the services running")
        raise typer.Exit(130) from None
    print_report(console, doc)
    if json_path is not None:
        write_json(json_path, doc)
    raise typer.Exit(0 if doc["ok"] else 1)
