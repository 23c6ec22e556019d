"""``ganglion boards list|show``: the shipped boards, and any board file checked by the schema."""
from __future__ import annotations

import json

import click

import boards as registry


@click.group()
def boards():
    """List and show supported boards (boards/*.toml)."""


@boards.command("list")
def list_cmd():
    """One line per shipped board: name, architecture, runtime, artifact format."""
    for name in registry.names():
        b = registry.load(name)
        accel = b.runtime.delegate if b.runtime.backend == "litert" else b.runtime.execution_providers[0]
        click.echo(f"{b.name:<18} {b.architecture:<8} py{b.python.version:<5} {b.runtime.backend:<12} "
                   f"{accel:<26} {b.artifact.format}")


@boards.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the validated board as JSON.")
def show(name, as_json):
    """Show one board by NAME, or validate and show a board file (a path ending in .toml)."""
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
