"""Which schema library for the one typed configuration (issue 10 item 2): pydantic v2 or msgspec.

Measured side by side, in one run:
  - size on a device: the aarch64 cp311 wheels ``pip download`` picks (with dependencies), in bytes
    as downloaded and as installed (the sum of the unpacked files);
  - error quality: the message each gives for one config with three mistakes (a wrong-typed nested
    key, a value outside a closed set, a misspelt key);
  - import time in a fresh interpreter (median of interleaved runs; the ratio is what carries).

Needs PyPI (pip download) and makes a throwaway venv with both libraries in a temp folder.

    python bench/config_libs.py [--runs 9] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

TAGS = ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64"]
BAD = {"workers": {"count": "two", "start_method": "bogus"}, "telemetry": {"brokr": "x"}}
PROBES = {
    "msgspec": """
import json, sys, msgspec
from typing import Literal
class W(msgspec.Struct, forbid_unknown_fields=True):
    count: int = 1
    start_method: Literal["spawn", "forkserver", "fork"] = "spawn"
class T(msgspec.Struct, forbid_unknown_fields=True):
    broker: str = ""
class C(msgspec.Struct, forbid_unknown_fields=True):
    workers: W = msgspec.field(default_factory=W)
    telemetry: T = msgspec.field(default_factory=T)
try:
    msgspec.convert(json.loads(sys.argv[1]), C)
except msgspec.ValidationError as exc:
    print(exc)
""",
    "pydantic": """
import json, sys
from typing import Literal
from pydantic import BaseModel, ConfigDict, ValidationError
class S(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
class W(S):
    count: int = 1
    start_method: Literal["spawn", "forkserver", "fork"] = "spawn"
class T(S):
    broker: str = ""
class C(S):
    workers: W = W()
    telemetry: T = T()
try:
    C.model_validate(json.loads(sys.argv[1]))
except ValidationError as exc:
    for e in exc.errors():
        print(".".join(map(str, e["loc"])), "|", e["msg"], "| found:", repr(e["input"]))
""",
}
IMPORTS = {"python": "pass", "msgspec": "import msgspec", "pydantic": "from pydantic import BaseModel"}


def sizes(lib: str, folder: Path) -> dict:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--python-version", "3.11",
                    "--implementation", "cp", "--abi", "cp311", *[a for t in TAGS for a in ("--platform", t)],
                    "-d", str(folder), lib], check=True)
    wheels = sorted(folder.glob("*.whl"))
    installed = sum(i.file_size for w in wheels for i in zipfile.ZipFile(w).infolist())
    return {"wheels": [w.name for w in wheels], "download_bytes": sum(w.stat().st_size for w in wheels),
            "installed_bytes": installed}


def import_times(python: str, runs: int) -> dict:
    times = {k: [] for k in IMPORTS}
    for _ in range(runs):                       # interleaved: the machine's load hits all alike
        for key, code in IMPORTS.items():
            start = time.perf_counter()
            subprocess.run([python, "-c", code], check=True)
            times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True)
        python = str(tmp / "venv" / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", "pydantic", "msgspec"], check=True)
        out = {"config": BAD, "libraries": {}}
        for lib in ("pydantic", "msgspec"):
            (tmp / lib).mkdir()
            probe = subprocess.run([python, "-c", PROBES[lib], json.dumps(BAD)], capture_output=True, text=True)
            out["libraries"][lib] = {**sizes(lib, tmp / lib), "errors": probe.stdout.strip().splitlines()}
        medians = import_times(python, args.runs)
        for lib in ("pydantic", "msgspec"):
            out["libraries"][lib]["import_s_over_bare_python"] = medians[lib] - medians["python"]
        out["bare_python_s"] = medians["python"]
    print(f"{'library':<10}{'download MB':>13}{'installed MB':>14}{'import s':>10}{'problems reported':>19}")
    for lib, row in out["libraries"].items():
        print(f"{lib:<10}{row['download_bytes'] / 1e6:>13.2f}{row['installed_bytes'] / 1e6:>14.2f}"
              f"{row['import_s_over_bare_python']:>10.3f}{len(row['errors']):>19}")
    for lib, row in out["libraries"].items():
        print(f"\n{lib}:\n  " + "\n  ".join(row["errors"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
