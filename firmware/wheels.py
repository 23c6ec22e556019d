"""The wheels a board's bundle carries: downloaded for its platform, or picked from a wheelhouse.

pip matches platform tags exactly, so a board lists several (``manylinux_2_28_aarch64``,
``manylinux2014_aarch64``, ...) and ``fetch`` passes them all to
``pip download --only-binary=:all: --platform ... --python-version ... --implementation cp``,
into a cache folder outside git (``~/.cache/ganglion-wheels/<board>`` by default).
With ``--wheelhouse DIR`` nothing is downloaded: every wheel in DIR whose tags fit the board is
taken (a device vendor's index, an air-gapped build, or the tests' one small wheel).

Run as ``python -m firmware.wheels --board rpi4 --cache DIR`` to fill a cache ahead of time.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from firmware.errors import BuildError

DEFAULT_CACHE = Path.home() / ".cache" / "ganglion-wheels"
# PEP 427: {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl
WHEEL_RE = re.compile(r"(?P<name>[^-]+)-(?P<version>[^-]+)(-(?P<build>\d[^-]*))?"
                      r"-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl")


@dataclass(frozen=True)
class WheelName:
    name: str
    version: str
    py: tuple[str, ...]
    abi: tuple[str, ...]
    plat: tuple[str, ...]

    @classmethod
    def parse(cls, filename: str) -> "WheelName":
        m = WHEEL_RE.fullmatch(filename)
        if not m:
            raise BuildError(f"{filename!r} is not a wheel file name", code="firmware.wheel_name")
        return cls(m["name"], m["version"], tuple(m["py"].split(".")), tuple(m["abi"].split(".")),
                   tuple(m["plat"].split(".")))


def compatible(wheel: WheelName, board) -> bool:
    """Would pip on the board accept this wheel? (its Python, ABI and platform tags)."""
    major, minor = board.python.version.split(".")
    cp = f"cp{major}{minor}"
    py_ok = any(t in (cp, f"py{major}", f"py{major}{minor}") for t in wheel.py)
    abi3_ok = any(t.startswith("cp") and t[2:].isdigit() and int(t[3:] or 0) <= int(minor)
                  for t in wheel.py)
    abi_ok = any(a in (cp, "none") or (a == "abi3" and abi3_ok) for a in wheel.abi)
    # an abi3 wheel tagged cp3X runs on every CPython >= 3.X
    py_ok = py_ok or ("abi3" in wheel.abi and abi3_ok)
    plat_ok = any(p == "any" or p in board.python.platform_tags for p in wheel.plat)
    return py_ok and abi_ok and plat_ok


def from_wheelhouses(board, wheelhouses) -> list[Path]:
    """Every wheel in the given folders that fits the board; one per distribution (the newest name)."""
    chosen: dict[str, Path] = {}
    for folder in wheelhouses:
        folder = Path(folder)
        if not folder.is_dir():
            raise BuildError(f"wheelhouse {folder} is not a folder", where=str(folder),
                             code="firmware.wheelhouse")
        for path in sorted(folder.glob("*.whl")):
            wheel = WheelName.parse(path.name)
            if compatible(wheel, board):
                chosen[wheel.name.lower().replace("_", "-")] = path
    if not chosen:
        raise BuildError(f"no wheel in {', '.join(map(str, wheelhouses))} fits board {board.name} "
                         f"(python {board.python.version}, {board.python.platform_tags[0]}, ...)",
                         code="firmware.no_wheels",
                         hint="fill it with 'python -m firmware.wheels --board NAME --cache DIR'")
    return sorted(chosen.values())


def pip_download_command(board, dest: Path, requirements=None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", board.python.version, "--implementation", board.python.implementation,
           "-d", str(dest)]
    for tag in board.python.platform_tags:
        cmd += ["--platform", tag]
    return cmd + list(requirements or board.python.requirements)


def fetch(board, cache: str | Path | None = None, requirements=None) -> list[Path]:
    """pip download the board's requirements (and their dependencies) into the cache."""
    dest = Path(cache) if cache else DEFAULT_CACHE / board.name
    dest.mkdir(parents=True, exist_ok=True)
    cmd = pip_download_command(board, dest, requirements)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise BuildError(f"pip could not download wheels for {board.name}:\n{tail}",
                         where=" ".join(cmd), code="firmware.pip_download",
                         hint="check the board's platform_tags and python.version, or use --wheelhouse")
    # pip names every file it resolved, fresh or cached; take exactly those, not stale cache files.
    found = re.findall(r"(?:Saved|File was already downloaded) (\S+\.whl)", proc.stdout)
    paths = sorted({Path(p).resolve() for p in found})
    if not paths:
        raise BuildError("pip reported no wheels", where=" ".join(cmd), code="firmware.pip_download")
    for path in paths:
        if not compatible(WheelName.parse(path.name), board):
            raise BuildError(f"pip chose {path.name}, which does not fit {board.name}",
                             code="firmware.wheel_mismatch")
    return paths


@click.command()
@click.option("--board", required=True, help="Board name or .toml path.")
@click.option("--cache", type=click.Path(file_okay=False), default=None, help="Download folder.")
def main(board, cache):
    """Download a board's wheels into a cache folder and list them."""
    import boards
    for path in fetch(boards.load(board), cache):
        click.echo(str(path))


if __name__ == "__main__":
    from edge.errors import GanglionError
    try:
        main(standalone_mode=True)
    except GanglionError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
