"""Firmware bench: what a real bundle costs to build, verify, install and validate, side by side.

The bundle is the `rpi4` one the qemu test uses (real aarch64 wheels: ai-edge-litert, numpy and
their dependencies, ~31 MB; prepared by scripts/prepare_qemu_aarch64.sh) plus a tiny model.
Each step is the median of --runs, next to a baseline that does the least work of the same kind:

    verify     firmware.verify.verify   vs  one sha256 pass over the file (the floor for "hash every byte")
    install    firmware.install.install vs  tar extraction + wheel unzip with no checks and no fsync
    validate   firmware.validate under qemu-aarch64-static -cpu cortex-a72 (once; no baseline)

    .venv/bin/python bench/firmware_bench.py [--runs 5] [--json out.json] [--no-qemu]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import keys  # noqa: E402
from firmware.build import build  # noqa: E402
from firmware.install import install  # noqa: E402
from firmware.validate import validate  # noqa: E402
from firmware.verify import verify  # noqa: E402
from tests.firmware import helpers  # noqa: E402


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def baseline_extract(bundle: Path, dest: Path) -> None:
    """No checks, no fsync: untar, then unzip each wheel into site/ (the least an install can do)."""
    with tarfile.open(bundle) as tar:
        tar.extractall(dest, filter="data")
    for wheel in (dest / "wheels").glob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(dest / "site")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--no-qemu", action="store_true")
    args = parser.parse_args()
    prep = subprocess.run(["bash", str(REPO / "scripts/prepare_qemu_aarch64.sh")], cwd=REPO,
                          capture_output=True, text=True, check=True)
    paths = dict(line.split("=", 1) for line in prep.stdout.splitlines() if "=" in line)
    work = Path(tempfile.mkdtemp(prefix="fw-bench-"))
    try:
        results = run(work, Path(paths["SYSROOT"]), Path(paths["WHEELHOUSE"]), args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=2))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def run(work: Path, sysroot: Path, wheelhouse: Path, args) -> dict:
    private, public = keys.generate(work / "k", work / "k.pub")
    gpk = helpers.tiny_gpk(work / "m.gpk", int8=True)
    config = work / "daemon.toml"
    config.write_bytes(helpers.CONFIG)
    bundle = work / "rpi4.fw"
    build_s = timed(lambda: build("rpi4", gpk, config, private, bundle, wheelhouse, version="1.0.0"),
                    max(1, args.runs // 2))
    size_mb = bundle.stat().st_size / 1e6
    def sha_pass():
        digest = hashlib.sha256()
        with open(bundle, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)

    sha_s = timed(sha_pass, args.runs)
    verify_s = timed(lambda: verify(bundle, public), args.runs)
    counter = iter(range(10_000))

    def do_install():
        install(bundle, work / f"root-{next(counter)}", public)

    def do_baseline():
        baseline_extract(bundle, work / f"plain-{next(counter)}")

    install_s = timed(do_install, args.runs)
    plain_s = timed(do_baseline, args.runs)
    out = {"bundle_mb": round(size_mb, 1), "build_s": round(build_s, 3),
           "sha256_s": round(sha_s, 3), "verify_s": round(verify_s, 3),
           "verify_vs_sha256": round(verify_s / sha_s, 2),
           "install_s": round(install_s, 3), "plain_extract_s": round(plain_s, 3),
           "install_vs_plain": round(install_s / plain_s, 2),
           "install_mb_per_s": round(size_mb / install_s, 1)}
    qemu = shutil.which("qemu-aarch64-static")
    if qemu and not args.no_qemu:
        root = work / "root-0"
        python = [qemu, "-L", str(sysroot), "-cpu", "cortex-a72", str(sysroot / "usr/bin/python3.11")]
        start = time.perf_counter()
        report = validate(root, python=python, timeout=600)
        out["validate_qemu_s"] = round(time.perf_counter() - start, 2)
        out["validate_ok"] = report["ok"]
    return out


def print_table(r: dict) -> None:
    rows = [("bundle", f"{r['bundle_mb']} MB", ""), ("build", f"{r['build_s']} s", ""),
            ("verify", f"{r['verify_s']} s", f"{r['verify_vs_sha256']}x one sha256 pass ({r['sha256_s']} s)"),
            ("install", f"{r['install_s']} s", f"{r['install_vs_plain']}x plain untar+unzip "
                                               f"({r['plain_extract_s']} s), {r['install_mb_per_s']} MB/s")]
    if "validate_qemu_s" in r:
        rows.append(("validate (qemu A72)", f"{r['validate_qemu_s']} s", f"ok={r['validate_ok']}"))
    print(f"\n{'step':<20} {'median':>10}  compared with")
    for name, value, note in rows:
        print(f"{name:<20} {value:>10}  {note}")


if __name__ == "__main__":
    main()
