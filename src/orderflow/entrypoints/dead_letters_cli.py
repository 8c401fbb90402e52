"""``orderflow dead-letters``: list, replay or discard dead letters (the same code as the back
office's console, ``operations.dead_letters``)."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from orderflow.observability.logging import configure_logging
from orderflow.settings import get_settings

app = typer.Typer(help="Inspect, replay or discard dead letters.")
MessageIds = Annotated[list[str] | None, typer.Argument(help="message ids (event ids)")]
AllFlag = Annotated[bool, typer.Option("--all", help="every dead letter (that the filters match)")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="change nothing; show what it would take")]

# The filter options every command takes: option parameter -> (its type, the Filter field).
_FILTER_OPTIONS: dict[str, tuple[Any, str]] = {
    "handler": (Annotated[str | None, typer.Option(help="only this handler's")], "handler"),
    "reason": (
        Annotated[str | None, typer.Option(help="only those whose error contains this")],
        "reason",
    ),
    "event_type": (
        Annotated[str | None, typer.Option("--event-type", help="only this event type")],
        "event_type",
    ),
    "min_age": (
        Annotated[float | None, typer.Option("--min-age", help="failed at least this many s ago")],
        "min_age_s",
    ),
    "max_age": (
        Annotated[float | None, typer.Option("--max-age", help="failed at most this many s ago")],
        "max_age_s",
    ),
}


def _filtered(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with the filter options in place of its ``where`` parameter, which gets the
    ``Filter`` they make."""
    signature = inspect.signature(command, eval_str=True)
    params: list[inspect.Parameter] = []
    for param in signature.parameters.values():
        if param.name != "where":
            params.append(param)
            continue
        params += [
            inspect.Parameter(name, param.POSITIONAL_OR_KEYWORD, default=None, annotation=kind)
            for name, (kind, _) in _FILTER_OPTIONS.items()
        ]

    @functools.wraps(command)
    def run(**options: Any) -> None:
        from orderflow.operations.dead_letters import Filter

        fields = {field: options.pop(name) for name, (_, field) in _FILTER_OPTIONS.items()}
        command(**options, where=Filter(**fields))

    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


@app.command("list")
@_filtered
def dead_letters_list(
    where: object,
    json_output: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """List the dead letters: message id, handler, event type, attempts, last failure, error."""
    _dead_letters("list", [], every=True, where=where, json_output=json_output)


@app.command("replay")
@_filtered
def dead_letters_replay(
    ids: MessageIds = None,
    every: AllFlag = False,
    where: object = None,
    dry_run: DryRun = False,
) -> None:
    """Send dead letters back to their handler's work queue."""
    _dead_letters("replay", ids or [], every=every, where=where, dry_run=dry_run)


@app.command("discard")
@_filtered
def dead_letters_discard(
    ids: MessageIds = None,
    every: AllFlag = False,
    why: Annotated[str | None, typer.Option("--why", help="why they are discarded")] = None,
    where: object = None,
    dry_run: DryRun = False,
) -> None:
    """Delete dead letters for good (say why with --why; recorded)."""
    if not dry_run and not why:
        raise typer.BadParameter("say why with --why (it is recorded)")
    _dead_letters("discard", ids or [], every=every, where=where, dry_run=dry_run, why=why)


def _dead_letters(
    action: str,
    ids: list[str],
    *,
    every: bool,
    where: object,
    dry_run: bool = False,
    why: str | None = None,
    json_output: bool = False,
) -> None:
    import orjson

    from orderflow.operations.dead_letters import Filter, process, record

    if action != "list" and not ids and not every:
        raise typer.BadParameter("name message ids, or --all")
    assert isinstance(where, Filter)
    settings = get_settings()
    configure_logging(settings, process="dead-letters")
    letters = asyncio.run(
        process(settings, action=action, ids=ids, every=every, where=where, dry_run=dry_run)
    )
    for letter in letters:
        if json_output:
            typer.echo(orjson.dumps(letter.as_dict()).decode())
        else:
            failed = letter.failed_at.isoformat(timespec="seconds") if letter.failed_at else "-"
            typer.echo(
                f"{letter.message_id}  {letter.handler}  {letter.event_type}  "
                f"attempt {letter.attempt}  {failed}  {letter.error}"
            )
    if action != "list" and not dry_run and letters:
        asyncio.run(record(settings, action=action, letters=letters, why=why))
    verb = {"list": "dead letters", "replay": "replayed", "discard": "discarded"}[action]
    if dry_run:
        verb = f"would be {verb} (dry run: nothing changed)"
    typer.echo(f"{len(letters)} {verb}", err=json_output)
