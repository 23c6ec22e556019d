"""Issue 9, item 14: every ``ganglion`` command shown in the README, in docs/*.md and in the
commands' own ``--help`` examples is parsed by the real click tree -- a renamed flag, a removed
verb or a typo in a documented example fails here, not in a user's terminal. (The examples that
write and start things run for real in their own tests: test_starter_config.py, the firmware
CLI cycle in tests/firmware/test_cli.py, test_broker_state.py.)

Parsing is click's own: unknown options, unknown commands and extra arguments fail; a path that
does not exist here or a value left to a config file does not.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from edge.cli import cli

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OLD_SPELLINGS = ("--trust ", "--artifact-trust", "--firmware-key", "--broker-ca", "--broker-cert", "--broker-key",
                 "--broker-username", "--broker-password")
MY_PAGES = ("daemon.md", "firmware.md", "telemetry.md", "camera.md", "cli.md")


def _code_lines(text: str) -> list[str]:
    """Lines inside fenced code blocks (bash/sh/plain), continuation lines joined."""
    out, fenced, inside, pending = [], False, False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            inside = fenced and line.strip("`").strip() in ("", "bash", "sh", "console", "shell")
            continue
        if inside:
            pending += line.rstrip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            out.append(pending)
            pending = ""
    return out


def _commands(lines: list[str]) -> list[list[str]]:
    """``ganglion ARGS`` / ``$G ARGS`` invocations, one per command (&&, |, > ends one)."""
    found = []
    for line in lines:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        while tokens:
            head = tokens.pop(0)
            if head in ("ganglion", "$G") or head.endswith("/ganglion"):
                args = []
                while tokens and tokens[0] not in ("&&", "||", "|", ">", ";"):
                    args.append(tokens.pop(0))
                if args and not any("..." in a or a.startswith("[") for a in args):
                    found.append(args)
    return found


def _examples() -> list[tuple[str, list[str]]]:
    cases = []
    for page in PAGES:
        for args in _commands(_code_lines(page.read_text())):
            cases.append((page.name, args))
    for name, cmd in _leaves():
        text = cmd.help or ""
        lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines()]
        for args in _commands([ln for ln in lines if ln.startswith("ganglion ")]):
            cases.append((f"ganglion {name} --help", args))
    return cases


def _leaves(group=cli, prefix=""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


EXAMPLES = _examples()


def test_the_pages_hold_examples():
    pages = {page for page, _ in EXAMPLES}
    assert {"README.md", "daemon.md", "firmware.md", "telemetry.md", "ganglion run --help"} <= pages
    assert len(EXAMPLES) > 40


@pytest.mark.parametrize("page,args", EXAMPLES, ids=[f"{p}:{' '.join(a)[:60]}" for p, a in EXAMPLES])
def test_documented_command_parses(page, args):
    group, rest, path = cli, list(args), []
    while isinstance(group, click.Group):
        name = next((a for a in rest if not a.startswith("-")), None)
        if name is None:
            return                                      # `ganglion --help` and the like
        assert rest[0] == name, f"{page}: options before the command in {args}"
        rest.pop(0)
        cmd = group.get_command(click.Context(group), name)
        assert cmd is not None, f"{page}: no command {' '.join(path + [name])!r} ({args})"
        group, path = cmd, path + [name]
    if any(a in ("-h", "--help") for a in rest):
        return
    try:
        group.make_context(" ".join(path), rest)
    except (click.NoSuchOption, click.BadOptionUsage) as exc:
        pytest.fail(f"{page}: `ganglion {' '.join(args)}`: {exc.format_message()}")
    except (click.BadParameter, click.MissingParameter):
        pass               # a path of the example that does not exist here, or a value left to a config file
    except click.UsageError as exc:
        pytest.fail(f"{page}: `ganglion {' '.join(args)}`: {exc.format_message()}")


@pytest.mark.parametrize("page", MY_PAGES)
def test_device_pages_use_the_one_vocabulary(page):
    text = (ROOT / "docs" / page).read_text()
    if page == "cli.md":
        text = text.split("## Exit codes")[1]           # the vocabulary table names the old spellings
    assert not [old for old in OLD_SPELLINGS if old in text], page
    assert not re.search(r"ganglion (firmware build|telemetry send)[^\n`]* --key ", text), page
