"""``orderflow bench``: the scenarios as subcommands, each with the ceilings of the same run."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orderflow.bench.runner import BenchRun

bench_app = typer.Typer(
    help="Benchmarks: place, lifecycle, ceiling, suite. Each runs on a fresh database.",
    no_args_is_help=True,
)

Concurrency = Annotated[int, typer.Option(min=1, help="concurrent HTTP clients")]
Duration = Annotated[float, typer.Option(min=0.5, help="measured seconds per step")]
Workers = Annotated[int, typer.Option(min=1, help="uvicorn worker processes of the servers")]
Processes = Annotated[int, typer.Option(min=1, help="load generator processes")]
JsonPath = Annotated[Path | None, typer.Option("--json", help="write the results here")]
Compare = Annotated[Path | None, typer.Option(help="an earlier --json file to compare with")]
Database = Annotated[str | None, typer.Option(help="database name (default: a new one)")]
KeepDb = Annotated[bool, typer.Option(help="keep the database afterwards")]
Warmup = Annotated[float, typer.Option(min=0, help="unmeasured seconds before each step")]
SkipCeiling = Annotated[bool, typer.Option("--no-ceiling", help="skip the ceilings")]

Scenario = Callable[[BenchRun, dict[str, Any] | None], Awaitable[list[dict[str, Any]]]]


@bench_app.command("serve-ceiling", hidden=True)
def serve_ceiling(
    port: Annotated[int, typer.Option(help="TCP port")],
    workers: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Serve the ceiling app (started by the bench itself), as `orderflow api` serves the API."""
    from orderflow.kernel.serving import Target, serve

    serve(
        Target("orderflow.bench.ceiling_app:create_app", "127.0.0.1", port, "ceiling"),
        workers=workers,
    )


@dataclass(frozen=True, slots=True)
class Shape:
    """How a run loads the system: the ceilings first or not, their clients and seconds, and
    the servers' and load generators' processes."""

    ceiling: bool
    concurrency: int
    duration: float
    warmup: float
    workers: int = 2
    processes: int = 1


@dataclass(frozen=True, slots=True)
class Output:
    """The run's database, and where its results go (and what they are compared with)."""

    json_path: Path | None
    compare: Path | None
    database: str | None
    keep_db: bool = False
    markdown: Path | None = None


def _execute(scenario: Scenario | None, shape: Shape, out: Output) -> None:
    from orderflow.bench import report
    from orderflow.bench.ceiling import run_ceiling

    console = Console(width=None if sys.stdout.isatty() else 150)
    run = BenchRun.create(database=out.database, console=console)
    run.keep_db = out.keep_db
    run.server_workers, run.loadgen_processes = shape.workers, shape.processes

    async def go() -> dict[str, Any]:
        # SIGTERM stops a run as Ctrl-C does: the servers (in sessions of their own) and the
        # database go too, instead of outliving the bench.
        main = asyncio.current_task()
        assert main is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
        await run.open()
        try:
            figures = None
            if shape.ceiling:
                figures = await run_ceiling(
                    run,
                    concurrency=shape.concurrency,
                    duration_s=shape.duration,
                    warmup_s=shape.warmup,
                )
            results = await scenario(run, figures) if scenario else []
            return report.document(results, figures, run.postgresql)
        finally:
            await run.close()

    try:
        doc = asyncio.run(go())
    except asyncio.CancelledError:
        console.print("stopped by SIGTERM; servers stopped")
        raise typer.Exit(128 + signal.SIGTERM) from None
    report.print_report(console, doc)
    if out.json_path is not None:
        report.write_json(out.json_path, doc)
        console.print(f"wrote {out.json_path}")
    if out.markdown is not None:
        from orderflow.bench.markdown import update_performance_doc

        update_performance_doc(out.markdown, doc)
        console.print(f"updated {out.markdown}")
    if out.compare is not None:
        console.print(report.compare_table(report.load_json(out.compare), doc))
    if not doc["ok"]:
        raise typer.Exit(1)


@bench_app.command()
def ceiling(
    concurrency: Concurrency = 32,
    duration: Duration = 10.0,
    warmup: Warmup = 2.0,
    workers: Workers = 2,
    processes: Processes = 1,
    json_path: JsonPath = None,
    compare: Compare = None,
    database: Database = None,
    keep_db: KeepDb = False,
) -> None:
    """Ceilings: minimal insert endpoint, RabbitMQ round trips, PostgreSQL commits."""
    shape = Shape(True, concurrency, duration, warmup, workers, processes)
    _execute(None, shape, Output(json_path, compare, database, keep_db))


@bench_app.command()
def place(
    concurrency: Concurrency = 32,
    duration: Duration = 20.0,
    warmup: Warmup = 2.0,
    hot: Annotated[bool, typer.Option(help="every order shares one product")] = False,
    products: Annotated[int, typer.Option(min=10, help="catalogue size")] = 2000,
    workers: Workers = 2,
    processes: Processes = 1,
    no_ceiling: SkipCeiling = False,
    json_path: JsonPath = None,
    compare: Compare = None,
    database: Database = None,
    keep_db: KeepDb = False,
) -> None:
    """HTTP order placement only: orders/s, latency, errors; then the audit."""
    from orderflow.bench.place import run_place

    async def scenario(run: BenchRun, figures: dict[str, Any] | None) -> list[dict[str, Any]]:
        return [
            await run_place(
                run,
                concurrency=concurrency,
                duration_s=duration,
                hot=hot,
                ceiling=figures,
                products=products,
                warmup_s=warmup,
            )
        ]

    shape = Shape(not no_ceiling, concurrency, duration, warmup, workers, processes)
    _execute(scenario, shape, Output(json_path, compare, database, keep_db))


Rates = Annotated[str, typer.Option(help="offered orders/s per step, comma-separated")]


# The suite's lifecycle steps: from a rate this 2-core machine sustains up to the target and
# beyond, close enough together to place the knee within 20-50 %; stepping stops after the
# first step past the knee.
SUITE_RATES = [25.0, 50.0, 75.0, 100.0, 125.0, 150.0, 200.0, 250.0, 300.0, 400.0]


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise typer.BadParameter("rates are numbers, e.g. 50,100,200") from None
    if not rates or min(rates) <= 0:
        raise typer.BadParameter("give at least one positive rate")
    return rates


@bench_app.command()
def lifecycle(
    rates: Rates = "50,100,200,300,400",
    duration: Duration = 15.0,
    warmup: Warmup = 2.0,
    worker_processes: Annotated[int, typer.Option(min=1, help="`orderflow up --workers`")] = 1,
    idle_seconds: Annotated[float, typer.Option(min=0.5, help="first step at 5 orders/s")] = 5.0,
    processes: Processes = 1,
    no_ceiling: SkipCeiling = False,
    json_path: JsonPath = None,
    compare: Compare = None,
    database: Database = None,
    keep_db: KeepDb = False,
    vacuum: Annotated[
        bool,
        typer.Option(
            help="when the server's autovacuum is off, vacuum the run's database as it would"
        ),
    ] = True,
) -> None:
    """Orders at stepped steady rates run to delivered by `orderflow up` (autopilot, no delay)."""
    from orderflow.bench.lifecycle import run_lifecycle

    steps = _rates(rates)

    async def scenario(run: BenchRun, figures: dict[str, Any] | None) -> list[dict[str, Any]]:
        return [
            await run_lifecycle(
                run,
                rates=steps,
                step_s=duration,
                warmup_s=warmup,
                ceiling=figures,
                worker_processes=worker_processes,
                idle_s=idle_seconds,
                vacuum=vacuum,
            )
        ]

    # The ceilings of a lifecycle run: 32 clients, at most 10 s a step.
    shape = Shape(not no_ceiling, 32, min(duration, 10.0), warmup, processes=processes)
    _execute(scenario, shape, Output(json_path, compare, database, keep_db))


@bench_app.command()
def suite(
    json_path: JsonPath = Path("docs/bench.json"),
    markdown: Annotated[
        Path | None, typer.Option(help="doc whose figures block to rewrite")
    ] = Path("docs/performance.md"),
    compare: Compare = None,
    quick: Annotated[bool, typer.Option(help="shorter steps (about 2 minutes)")] = False,
    database: Database = None,
) -> None:
    """The standard suite of `make bench`: ceilings, place, place --hot, lifecycle."""
    from orderflow.bench.lifecycle import run_lifecycle
    from orderflow.bench.place import run_place
    from orderflow.bench.report import failed_result

    step = 6.0 if quick else 15.0

    async def scenario(run: BenchRun, figures: dict[str, Any] | None) -> list[dict[str, Any]]:
        out = []
        for hot in (False, True):
            out.append(
                await run_place(run, concurrency=32, duration_s=step + 5, hot=hot, ceiling=figures)
            )
        try:
            # place leaves thousands of unprocessed orders: orderflow up would work them off
            # during the lifecycle steps.
            await run.fresh_database()
            out.append(await run_lifecycle(run, rates=SUITE_RATES, step_s=step, ceiling=figures))
        except Exception as exc:  # reported as a failed scenario; the others still count
            out.append(failed_result("lifecycle", exc))
        return out

    shape = Shape(True, 32, step * 2 / 3, 2.0)
    _execute(scenario, shape, Output(json_path, compare, database, markdown=markdown))
