"""``ganglion boards list|show``: the shipped boards, and any board file checked by the schema."""
from __future__ import annotations

import json

import click

import boards as registry


@click.group()
def boards():
    """List and show supported boards (boards/*.toml)."""


@boards.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print every board as JSON (a list of board tables).")
def list_cmd(as_json):
    """One line per shipped board: name, architecture, Python, runtime, accelerator, artifact format.

    \b
    Examples:
      ganglion boards list
      ganglion boards list --json
    """
    loaded = [registry.load(name) for name in registry.names()]
    if as_json:
        click.echo(json.dumps([b.to_dict() for b in loaded], indent=2))
        return
    for b in loaded:
        accel = b.runtime.delegate if b.runtime.backend == "litert" else b.runtime.execution_providers[0]
        click.echo(f"{b.name:<18} {b.architecture:<8} py{b.python.version:<5} {b.runtime.backend:<12} "
                   f"{accel:<26} {b.artifact.format}")


@boards.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the validated board as JSON.")
def show(name, as_json):
    """Show one board by NAME, or validate and show a board file (a path ending in .toml).

    \b
    Examples:
      ganglion boards show rpi4
      ganglion boards show ./my-board.toml --json
    """
    board = registry.load(name)
    data = board.to_dict()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"{board.name}: {board.description}")
    for section in ("python", "runtime", "artifact", "resources", "slots"):
        click.echo(f"[{section}]")
        for key, value in data[section].items():
            if isinstance(value, (list, tuple)):
                value = ", ".join(value) or "-"
            click.echo(f"  {key:<20} {value}")
    click.echo(f"source: {board.source}")
