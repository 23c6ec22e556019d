"""The wheels a board's bundle carries: downloaded for its platform, or picked from a wheelhouse.

pip matches platform tags exactly, so a board lists several (``manylinux_2_28_aarch64``,
``manylinux2014_aarch64``, ...) and ``fetch`` passes them all to
``pip download --only-binary=:all: --platform ... --python-version ... --implementation cp``,
into a cache folder outside git (``~/.cache/ganglion-wheels/<board>`` by default).
With ``--wheelhouse DIR`` nothing is downloaded: every wheel in DIR whose tags fit the board is
taken (a device vendor's index, an air-gapped build, or the tests' one small wheel); of several
wheels of one distribution the newest PEP 440 version wins (``packaging`` parses names, tags and
versions: sorting file names as text would put numpy 2.9.0 after 2.10.0).

Run as ``python -m firmware.wheels --board rpi4 --cache DIR`` to fill a cache ahead of time.
"""
from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

import boards
from core.errors import GanglionError
from firmware.errors import BuildError

DEFAULT_CACHE = Path.home() / ".cache" / "ganglion-wheels"
# Checked before packaging parses a name: a wheel file name is a plain file name (it becomes a
# bundle member ``wheels/<name>``), never a path, a dot file or a name with shell-unfriendly bytes.
# PEP 427/440 names need only these characters ('+' local versions, '!' epochs).
SAFE_FILENAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+!-]*\.whl")


@dataclass(frozen=True)
class WheelName:
    """A parsed wheel file name (PEP 427); ``packaging`` does the parsing, with its rules for
    name normalisation, PEP 440 versions, build tags and compressed tag sets."""
    filename: str
    name: str                       # canonical distribution name (PEP 503): "ai-edge-litert"
    version: Version
    build: tuple                    # () or (number, suffix): a higher build tag wins at equal version
    tags: frozenset[Tag]

    @classmethod
    def parse(cls, filename: str) -> "WheelName":
        if not SAFE_FILENAME.fullmatch(filename) or ".." in filename:
            raise BuildError(f"{filename!r} is not a wheel file name", code="firmware.wheel_name",
                             hint="a wheel is named NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl (PEP 427)")
        try:
            name, version, build, tags = parse_wheel_filename(filename)
        except (InvalidWheelFilename, InvalidVersion) as exc:
            raise BuildError(f"{filename!r} is not a wheel file name: {exc}", code="firmware.wheel_name",
                             hint="a wheel is named NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl (PEP 427)") from exc
        return cls(filename, str(name), version, tuple(build), frozenset(tags))


def board_tags(board) -> list[Tag]:
    """The tags pip on the board accepts, most specific first (the order pip prefers them in).

    ``platform_tags`` are taken as listed (pip matches them exactly, see the module docstring);
    ``packaging.tags`` adds the rest of pip's rules: abi3 wheels of older CPythons, ``none`` ABIs,
    pure ``py3``/``py3X`` wheels and ``any`` platforms."""
    major, minor = (int(p) for p in board.python.version.split(".")[:2])
    interpreter = f"{board.python.implementation}{major}{minor}"
    platforms = list(board.python.platform_tags)
    return [*cpython_tags((major, minor), abis=[interpreter], platforms=platforms),
            *compatible_tags((major, minor), interpreter, platforms)]


def compatible(wheel: WheelName, board) -> bool:
    """Would pip on the board accept this wheel? (its Python, ABI and platform tags)."""
    return not wheel.tags.isdisjoint(board_tags(board))


def _preference(wheel: WheelName, ranked: dict[Tag, int]) -> tuple:
    """Newest version first (PEP 440 order, so 2.10.0 beats 2.9.0), then the higher build tag,
    then the most specific tag (a cp311 wheel over an abi3 one of the same release)."""
    best_tag = min(ranked[t] for t in wheel.tags if t in ranked)
    return (wheel.version, wheel.build, -best_tag)


def from_wheelhouses(board, wheelhouses) -> list[Path]:
    """Every distribution in the given folders with a wheel that fits the board, each as its best
    wheel (see ``_preference``); at a tie the first folder given wins."""
    ranked = {tag: i for i, tag in enumerate(board_tags(board))}
    chosen: dict[str, tuple[tuple, Path]] = {}
    for folder in wheelhouses:
        folder = Path(folder)
        if not folder.is_dir():
            raise BuildError(f"wheelhouse {folder} is not a folder", where=str(folder),
                             code="firmware.wheelhouse")
        for path in sorted(folder.glob("*.whl")):
            wheel = WheelName.parse(path.name)
            if wheel.tags.isdisjoint(ranked):
                continue
            key = _preference(wheel, ranked)
            if wheel.name not in chosen or key > chosen[wheel.name][0]:
                chosen[wheel.name] = (key, path)
    if not chosen:
        raise BuildError(f"no wheel in {', '.join(map(str, wheelhouses))} fits board {board.name} "
                         f"(python {board.python.version}, {board.python.platform_tags[0]}, ...)",
                         code="firmware.no_wheels",
                         hint="fill it with 'python -m firmware.wheels --board NAME --cache DIR'")
    return sorted(path for _, path in chosen.values())


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
    for path in fetch(boards.load(board), cache):
        click.echo(str(path))


if __name__ == "__main__":
    try:
        main(standalone_mode=True)
    except GanglionError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(exc.exit_code)
