"""The golden self-test: record an input and the artifact's output at build time, replay it on the slot.

``record`` runs at ``firmware build`` on the host: a seeded input shaped like the model's inputs,
run through the same interpreter family the board uses (LiteRT for tflite, ONNX Runtime on CPU for
QDQ onnx), saved as two .npz members plus a tolerance. ``run_slot`` runs on the device (or under
qemu) against an installed slot, using whatever numpy/LiteRT the slot's own site folder provides,
so it proves the *new* wheels and the *new* model work together before the slot is marked valid.

The tolerance allows a few int8 steps: XNNPACK on an A72 and on the build host may round one
quantized value differently (seen under qemu), which is not a fault. Float outputs:
``|got - expected| <= atol`` with atol = 2% of the peak magnitude (+1e-6); integer outputs: 1 step.

Run as ``python -m firmware.selftest --slot DIR`` (prints JSON, exit 0 only when it passes); the
validator starts it in a child process with ``PYTHONPATH=DIR/site`` so a native crash in a new
runtime fails the check instead of taking the validator down.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from core.artifact import read as read_artifact
from core.errors import GanglionError
from core.litert import find_litert, make_interpreter
from firmware.errors import BuildError, HealthCheckError

SEED = 20260
FLOAT_ATOL_FRACTION = 0.02


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(data: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return [npz[k] for k in sorted(npz.files, key=lambda k: int(k.split("_")[-1]))]


def _random_input(shape, dtype, rng) -> np.ndarray:
    # dynamic dimensions (None, -1, 'batch') run with 1
    shape = [int(d) if isinstance(d, (int, np.integer)) and d > 0 else 1 for d in shape]
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


def run_model(model: bytes, fmt: str, inputs: list[np.ndarray] | None, *, threads: int = 1):
    """Run once; ``inputs=None`` makes the seeded input. Returns (inputs, outputs, runtime name)."""
    rng = np.random.default_rng(SEED)
    if fmt == "tflite":
        interp = make_interpreter(model, num_threads=threads)
        details = interp.get_input_details()
        if inputs is None:
            inputs = [_random_input(d["shape"], d["dtype"], rng) for d in details]
        for d, value in zip(details, inputs):
            interp.set_tensor(d["index"], value)
        interp.invoke()
        outputs = [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]
        lite = find_litert()
        return inputs, outputs, f"{lite.name} {lite.version}"
    if fmt == "onnx":
        import onnxruntime as ort     # optional on a device: the [ort] extra, QDQ artifacts only
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        metas = session.get_inputs()
        if inputs is None:
            type_map = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}
            inputs = [_random_input(m.shape, type_map.get(m.type, np.float32), rng) for m in metas]
        outputs = session.run(None, {m.name: v for m, v in zip(metas, inputs)})
        return inputs, [np.asarray(o) for o in outputs], f"onnxruntime {ort.__version__}"
    raise BuildError(f"no self-test runner for format {fmt!r}", code="firmware.selftest_format")


def tolerance_for(outputs: list[np.ndarray]) -> list[float]:
    tol = []
    for out in outputs:
        if out.dtype.kind == "f":
            peak = float(np.max(np.abs(out))) if out.size else 0.0
            tol.append(FLOAT_ATOL_FRACTION * peak + 1e-6)
        else:
            tol.append(1.0)
    return tol


def record(model: bytes, fmt: str, *, threads: int = 1) -> tuple[bytes, bytes, dict]:
    """Build time: (input.npz, expected.npz, manifest entry with tolerance and runtime)."""
    try:
        inputs, outputs, runtime = run_model(model, fmt, None, threads=threads)
    except (ValueError, RuntimeError) as exc:
        raise BuildError(f"the model failed its first run: {exc}", code="firmware.selftest_record")
    entry = {"format": fmt, "atol": tolerance_for(outputs), "recorded_with": runtime,
             "outputs": [{"shape": list(o.shape), "dtype": str(o.dtype)} for o in outputs]}
    return (_npz({f"input_{i}": v for i, v in enumerate(inputs)}),
            _npz({f"output_{i}": v for i, v in enumerate(outputs)}), entry)


def compare(expected: list[np.ndarray], got: list[np.ndarray], atol: list[float]) -> dict:
    """Per-output check; ``ok`` only when shapes, dtypes and every value agree within atol."""
    if len(expected) != len(got):
        return {"ok": False, "reason": f"{len(got)} outputs, expected {len(expected)}"}
    worst = 0.0
    for i, (e, g, tol) in enumerate(zip(expected, got, atol)):
        if e.shape != g.shape or e.dtype != g.dtype:
            return {"ok": False, "reason": f"output {i} is {g.dtype}{list(g.shape)}, "
                                           f"expected {e.dtype}{list(e.shape)}"}
        diff = float(np.max(np.abs(e.astype(np.float64) - g.astype(np.float64)))) if e.size else 0.0
        worst = max(worst, diff)
        if not np.isfinite(diff) or diff > tol:
            return {"ok": False, "reason": f"output {i} differs by {diff:.6g} (tolerance {tol:.6g})",
                    "max_abs_diff": diff}
    return {"ok": True, "max_abs_diff": worst}


def run_slot(slot: str | Path, *, threads: int = 1) -> dict:
    """Device side: load the slot's artifact, replay the recorded input, compare with the golden."""
    slot = Path(slot)
    try:
        manifest = json.loads((slot / "manifest.json").read_bytes())
        entry = manifest["selftest"]
        artifact = read_artifact(slot / manifest["artifact"])
        model = artifact.model_bytes(entry["format"])
        inputs = _load_npz((slot / entry["input"]).read_bytes())
        expected = _load_npz((slot / entry["expected"]).read_bytes())
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, GanglionError) as exc:
        raise HealthCheckError(f"self-test files unreadable: {exc}", where=str(slot),
                               code="firmware.selftest_files")
    started = time.perf_counter()
    _, outputs, runtime = run_model(model, entry["format"], inputs, threads=threads)
    result = compare(expected, outputs, entry["atol"])
    result.update(runtime=runtime, seconds=round(time.perf_counter() - started, 4),
                  machine=platform.machine(), python=platform.python_version())
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Replay a slot's golden self-test; prints JSON.")
    parser.add_argument("--slot", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        result = run_slot(args.slot, threads=args.threads)
    except Exception as exc:  # report any failure of the new runtime as data, for the validator
        result = {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
