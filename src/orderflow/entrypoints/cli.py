"""The ``orderflow`` command line: one entry point for every process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from orderflow.bench.cli import bench_app as _bench_app
from orderflow.entrypoints.audit import audit as _audit_command
from orderflow.observability.logging import configure_logging
from orderflow.settings import get_settings

app = typer.Typer(help="orderflow: event-driven order processing.", no_args_is_help=True)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    access_log: Annotated[bool, typer.Option(help="log every request")] = False,
) -> None:
    """Serve the HTTP API, the admin dashboard and /metrics."""
    settings = get_settings()
    configure_logging(settings, process="api")
    serve(
        "orderflow.entrypoints.api.app:create_app",
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        access_log=access_log,
    )


def serve(target: str, *, host: str, port: int, workers: int, access_log: bool) -> None:
    """Run the ASGI app factory ``target`` under uvicorn with the project's server settings."""
    uvicorn.run(
        target,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_config=None,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
    )


def alembic_config(dsn: str | None = None) -> object:
    """An Alembic config for the packaged migrations."""
    from alembic.config import Config

    from orderflow.adapters.postgres.database import sqlalchemy_url

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn or get_settings().dsn()))
    return config


@app.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="target revision")] = "head",
) -> None:
    """Create the database if needed and upgrade its schema."""
    from alembic import command

    from orderflow.adapters.postgres.database import ensure_database

    settings = get_settings()
    configure_logging(settings, process="migrate")
    if asyncio.run(ensure_database(settings.dsn())):
        typer.echo("created the database")
    command.upgrade(alembic_config(), revision)  # type: ignore[arg-type]
    typer.echo(f"database at {revision}")


@app.command()
def seed(
    products: Annotated[int, typer.Option(min=0, help="number of demo products")] = 20,
) -> None:
    """Load a demo catalogue and a demo customer (idempotent)."""
    from orderflow.service.demo import seed_demo

    settings = get_settings()
    configure_logging(settings, process="seed")
    summary = asyncio.run(seed_demo(settings, products=products))
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


# Commands implemented in their own modules.
app.command("audit")(_audit_command)
app.add_typer(_bench_app, name="bench")

if __name__ == "__main__":
    app()
