"""The ``orderflow`` command line: one entry point for every process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from orderflow.bench.chaos.cli import chaos as _chaos_command
from orderflow.bench.cli import bench_app as _bench_app
from orderflow.entrypoints import dead_letters_cli, keys_cli, sessions_cli
from orderflow.entrypoints.audit import audit as _audit_command
from orderflow.observability.logging import configure_logging
from orderflow.observability.tracing import configure_tracing
from orderflow.settings import get_settings

app = typer.Typer(help="orderflow: event-driven order processing.", no_args_is_help=True)
app.add_typer(keys_cli.app, name="keys")
app.add_typer(sessions_cli.app, name="sessions")
app.add_typer(dead_letters_cli.app, name="dead-letters")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="server processes, each on its own SO_REUSEPORT socket")
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
) -> None:
    """Serve the HTTP API, the admin dashboard and /metrics."""
    from orderflow.kernel.serving import Target, serve

    settings = get_settings()
    configure_logging(settings, process="api")
    target = Target(
        "orderflow.entrypoints.api.app:create_app",
        host=host or settings.host,
        port=port or settings.port,
        process="api",
        access_log=access_log,
    )
    serve(target, workers=workers)


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Create the database if needed and upgrade its schema."""
    from alembic import command

    from orderflow.kernel.database import ensure_database

    settings = get_settings()
    configure_logging(settings, process="migrate")
    if asyncio.run(ensure_database(settings.dsn())):
        typer.echo("created the database")
    from orderflow.migrations import alembic_config

    command.upgrade(alembic_config(), revision)  # type: ignore[arg-type]
    typer.echo(f"database at {revision}")
    from orderflow.entrypoints.worker import declare_saga_topology

    handlers = asyncio.run(declare_saga_topology(settings))
    typer.echo(f"broker topology declared on {settings.exchange} ({len(handlers)} handlers)")


@app.command()
def seed(
    products: Annotated[int, typer.Option(min=0, help="number of demo products")] = 20,
) -> None:
    """Load a demo catalogue and customer (idempotent); print fresh demo API keys."""
    from orderflow.entrypoints.demo import seed_demo

    settings = get_settings()
    configure_logging(settings, process="seed")
    summary = asyncio.run(seed_demo(settings, products=products))
    summary += keys_cli.demo_keys()  # fresh each time: keys are stored hashed
    for line in summary:
        typer.echo(line)


@app.command()
def docs(
    path: Annotated[Path, typer.Argument(help="Markdown file with generated blocks")] = Path(
        "docs/order-lifecycle.md"
    ),
) -> None:
    """Regenerate the generated blocks of a doc (the lifecycle diagram)."""
    from orderflow.entrypoints.docsgen import regenerate

    typer.echo(f"{path}: {'updated' if regenerate(path) else 'up to date'}")


# Event backbone (issue 4): relay, worker, dev supervisor, dead letters.
MetricsPort = Annotated[int | None, typer.Option(help="serve Prometheus /metrics on this port")]


@app.command()
def relay(metrics_port: MetricsPort = None) -> None:
    """Publish the outbox to RabbitMQ (several relays may run at once)."""
    from orderflow.entrypoints.relay import run_relay
    from orderflow.kernel.process import run

    settings = get_settings()
    configure_logging(settings, process="relay")
    configure_tracing(settings, process="relay")
    run(run_relay(settings, metrics_port=metrics_port))


@app.command()
def worker(
    handlers: Annotated[str | None, typer.Option(help="comma-separated handler names")] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="deliveries at once")] = None,
    prefetch: Annotated[int | None, typer.Option(min=1, help="unacked per consumer")] = None,
    metrics_port: MetricsPort = None,
) -> None:
    """Consume events and run the saga handlers (all, or the ones named)."""
    from orderflow.entrypoints.worker import run_worker
    from orderflow.kernel.process import run

    settings = get_settings()
    overrides = {"worker_concurrency": concurrency, "worker_prefetch": prefetch}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v})
    configure_logging(settings, process="worker")
    configure_tracing(settings, process="worker")
    names = [n.strip() for n in handlers.split(",") if n.strip()] if handlers else None
    run(run_worker(settings, handlers=names, metrics_port=metrics_port))


@app.command()
def gateway(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
) -> None:
    """Run the payment gateway simulator: its HTTP API, ledger and webhooks to the API."""
    import uvicorn

    from orderflow.gateway.app import create_app

    settings = get_settings()
    configure_logging(settings, process="gateway")
    uvicorn.run(
        create_app(settings),
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        log_config=None,
        access_log=False,
    )


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    autopilot_delay: Annotated[float, typer.Option(min=0, help="autopilot step delay, s")] = 0.0,
    autopilot: Annotated[bool, typer.Option(help="drive warehouse and carrier steps")] = True,
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = 1,
    metrics_port: Annotated[int, typer.Option(help="relay's; workers' follow; 0: off")] = 9100,
) -> None:
    """Development: migrate, then run api, relay, workers and the payment gateway until
    Ctrl-C."""
    from orderflow.entrypoints.supervisor import plan, supervise

    children = plan(
        gateway_url=get_settings().gateway_url,
        port=port,
        workers=workers,
        autopilot=autopilot,
        autopilot_delay_s=autopilot_delay,
        metrics_port=metrics_port,
    )
    raise typer.Exit(asyncio.run(supervise(children)))


# Commands implemented in their own modules.
app.command("audit")(_audit_command)
app.add_typer(_bench_app, name="bench")
app.command("chaos")(_chaos_command)

if __name__ == "__main__":
    app()
