"""``orderflow sessions list|revoke``: the back office's open sessions, from the command line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer

from orderflow.access.sessions import SessionStore, SessionsUnavailable
from orderflow.domain.access import prefix_named_by
from orderflow.kernel.redis import create_redis
from orderflow.settings import get_settings

app = typer.Typer(help="List and end back-office sessions.", no_args_is_help=True)

T = TypeVar("T")


def _run(action: Callable[[SessionStore], Awaitable[T]]) -> T:
    async def main() -> T:
        settings = get_settings()
        link = create_redis(settings)
        store = SessionStore(
            link,
            idle_s=settings.admin_session_ttl_s,
            lifetime_s=settings.admin_session_lifetime_s,
        )
        try:
            return await action(store)
        finally:
            await link.close()

    try:
        return asyncio.run(main())
    except SessionsUnavailable:
        typer.echo("error: Redis cannot be reached; sessions cannot be read", err=True)
        raise typer.Exit(1) from None


def _at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@app.command("list")
def list_() -> None:
    """Show open sessions: handle, role, key prefix, opened, absolute end."""
    sessions = _run(lambda store: store.all())
    typer.echo(f"{'handle':<18}{'role':<8}{'key':<14}{'opened':<27}ends")
    for s in sessions:
        typer.echo(
            f"{s.handle:<18}{s.role.value:<8}{s.key_prefix:<14}{_at(s.opened_at):<27}"
            f"{_at(s.expires_at)}"
        )
    typer.echo(f"{len(sessions)} open", err=True)


@app.command()
def revoke(
    handle: Annotated[
        str | None, typer.Argument(help="a session's handle (or its first digits)")
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="end every session of this key (prefix, ofk_prefix or key)")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="end every session")] = False,
) -> None:
    """End sessions at once: one by handle, all of a key, or all."""
    if [handle is not None, key is not None, all_].count(True) != 1:
        raise typer.BadParameter("name one: a handle, --key or --all")
    prefix = None
    if key is not None:
        prefix = prefix_named_by(key.strip()) or key.strip()
    if handle is not None and len(handle) < 4:
        raise typer.BadParameter("a handle needs at least 4 digits")
    ended = _run(lambda store: store.revoke(handle=handle, key_prefix=prefix, every=all_))
    for s in ended:
        typer.echo(f"ended {s.handle} ({s.role.value}, key {s.key_prefix})")
    typer.echo(f"{len(ended)} ended")
