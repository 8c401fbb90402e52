"""``orderflow keys create|list|revoke``: API keys from the command line."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import asyncpg
import typer

from orderflow.access import keys
from orderflow.domain.access import Role
from orderflow.domain.errors import OrderflowError
from orderflow.kernel.database import create_pool
from orderflow.settings import get_settings

app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

T = TypeVar("T")


def _run(action: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def main() -> T:
        pool = await create_pool(get_settings(), min_size=1, max_size=2)
        try:
            return await action(pool)
        finally:
            await pool.close()

    try:
        return asyncio.run(main())
    except OrderflowError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(1) from None


@app.command()
def create(
    role: Annotated[Role, typer.Option(help="what the key may do")],
    customer: Annotated[
        uuid.UUID | None, typer.Option(help="the customer a customer key belongs to")
    ] = None,
    label: Annotated[str, typer.Option(help="a note for humans")] = "",
) -> None:
    """Issue a key. It is printed once, alone on the last line, and never stored."""
    issued = _run(lambda pool: keys.create_key(pool, role=role, customer_id=customer, label=label))
    owner = f" for customer {issued.row.customer_id}" if issued.row.customer_id else ""
    typer.echo(f"created {role.value} key {issued.row.prefix} (id {issued.row.id}){owner}")
    typer.echo("store it now; it cannot be shown again:")
    typer.echo(issued.token)


@app.command("list")
def list_(
    all_: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
) -> None:
    """Show keys by prefix (the secret part is never stored, so never shown)."""
    rows = _run(lambda pool: keys.list_keys(pool, include_revoked=all_))
    typer.echo(f"{'prefix':<14}{'role':<10}{'customer':<38}{'created':<27}{'revoked':<27}label")
    for row in rows:
        typer.echo(
            f"{row.prefix:<14}{row.role.value:<10}{row.customer_id or '-'!s:<38}"
            f"{row.created_at.isoformat(timespec='seconds'):<27}"
            f"{row.revoked_at.isoformat(timespec='seconds') if row.revoked_at else '-':<27}"
            f"{row.label}"
        )


@app.command()
def revoke(
    key: Annotated[
        str,
        typer.Argument(help="the key's prefix (with or without ofk_), the whole key, or its id"),
    ],
) -> None:
    """Revoke a key; running APIs refuse it within ORDERFLOW_AUTH_CACHE_TTL_S seconds."""
    row = _run(lambda pool: keys.revoke_key(pool, ident=key))
    ttl = get_settings().auth_cache_ttl_s
    typer.echo(f"revoked {row.role.value} key {row.prefix}; refused everywhere within {ttl:g} s")


def demo_keys() -> list[str]:
    """Issue the demo keys that ``orderflow seed`` prints."""
    from orderflow.entrypoints.demo import DEMO_EMAIL

    issued = _run(lambda pool: keys.issue_demo_keys(pool, customer_email=DEMO_EMAIL))
    return [
        f"demo admin key:    {issued['admin']}",
        f"demo customer key: {issued['customer']}",
    ]
