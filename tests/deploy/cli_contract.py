"""The `orderflow` commands and options that the deployment files invoke must exist."""

from __future__ import annotations

import typer.main

from orderflow.entrypoints.cli import app


def check_invocation(args: list[str]) -> None:
    """Fail unless ``orderflow <args>`` names a real command with real options."""
    group = typer.main.get_command(app)
    commands = getattr(group, "commands", {})
    command, *rest = args
    assert command in commands, f"`orderflow {command}` does not exist"
    options = {opt for param in commands[command].params for opt in param.opts}
    for word in rest:
        if word.startswith("--"):
            assert word.split("=", 1)[0] in options, f"`orderflow {command}` has no {word}"
