"""``ganglion doctor``: what this machine can run -- interpreters, delegates, providers, board.

Every probe is read-only and cheap: imports, file lookups, sysfs reads. A delegate library is
reported with where it was found and whether ``dlopen`` accepts it (a present but unloadable
Edge TPU library is the classic "works on my bench" failure). The JSON form (``--json``) is what
fleet tooling should parse; the text form is for people.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib
import json
import os
import platform
import sys

import click

from core.errors import GanglionError
from core.litert import find_litert, load_delegate

# name -> library file names to look for (external delegates loaded by path with --delegate)
DELEGATES = {
    "edgetpu": ["libedgetpu.so.1", "libedgetpu.so"],
    "gpu": ["libtensorflowlite_gpu_delegate.so"],
    "vx (NXP i.MX NPU)": ["libvx_delegate.so"],
    "ethos-u": ["libethosu_op_delegate.so"],
    "hexagon": ["libhexagon_interface.so"],
}
LIB_DIRS = ["/usr/lib", "/usr/local/lib", "/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
            "/usr/lib/arm-linux-gnueabihf"]
# /proc/device-tree/model substring -> board name in boards/
BOARD_MODELS = [("Raspberry Pi 5", "rpi5"), ("Raspberry Pi 4", "rpi4"), ("Orin Nano", "jetson-orin-nano"),
                ("Coral", "coral-devboard"), ("Phanbell", "coral-devboard")]


def litert_report() -> dict:
    try:
        lite = find_litert()
    except GanglionError as exc:
        return {"found": False, "error": exc.message, "hint": exc.hint}
    resolver = getattr(lite.module, "OpResolverType", None)
    xnnpack = "on by default" if resolver is not None and hasattr(resolver, "BUILTIN_WITHOUT_DEFAULT_DELEGATES") \
        else "unknown"
    return {"found": True, "package": lite.name, "version": lite.version, "xnnpack": xnnpack}


def delegates_report() -> dict:
    found = {}
    for name, libs in DELEGATES.items():
        found[name] = None
        for lib in libs:
            path = _find_lib(lib)
            if path:
                found[name] = {"library": lib, "path": path, "loadable": _loadable(path)}
                break
    return found


def _find_lib(lib: str) -> str | None:
    for d in LIB_DIRS + os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if d and os.path.exists(os.path.join(d, lib)):
            return os.path.join(d, lib)
    name = lib.split(".so")[0].removeprefix("lib")
    return ctypes.util.find_library(name)


def _loadable(path: str) -> bool | str:
    try:
        ctypes.CDLL(path)
        return True
    except OSError as exc:
        return str(exc)


def onnxruntime_report() -> dict:
    try:
        ort = importlib.import_module("onnxruntime")
    except ImportError:
        return {"found": False, "hint": "pip install 'ganglion-edge[ort]' (Jetson: onnxruntime-gpu)"}
    return {"found": True, "version": ort.__version__, "providers": ort.get_available_providers(),
            "device": ort.get_device()}


def board_report() -> dict:
    model = _read("/proc/device-tree/model")
    guess = None
    for needle, name in BOARD_MODELS:
        if model and needle in model:
            guess = name
    if guess is None and os.path.exists("/etc/nv_tegra_release"):
        guess = "jetson-orin-nano"
    if guess is None and platform.machine() == "x86_64":
        guess = "x86_64-generic"
    sensors = {p: _read(p) for p in sorted(glob.glob("/sys/class/thermal/thermal_zone*/temp"))}
    return {"machine": platform.machine(), "device_tree_model": model, "board": guess,
            "cpus": os.cpu_count(), "thermal_sensors": sensors}


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def extras_report() -> dict:
    out = {}
    for mod in ("numpy", "PIL", "cv2", "paho.mqtt", "psutil"):
        try:
            m = importlib.import_module(mod)
            out[mod] = getattr(m, "__version__", "present")
        except ImportError:
            out[mod] = None
    return out


def delegate_paths_report(paths) -> dict:
    """Each ``--delegate PATH`` loaded the way the daemon loads it (LiteRT's load_delegate, not
    just a dlopen): ``True``, or why it cannot serve as a delegate."""
    if not paths:
        return {}
    out = {}
    for path in paths:
        try:
            loaded, reason = load_delegate(path)
        except GanglionError as exc:          # no LiteRT at all: already a problem of its own
            loaded, reason = None, exc.message
        out[path] = True if loaded is not None else reason
        del loaded
    return out


def report(delegate_paths=()) -> dict:
    rep = {"python": sys.version.split()[0], "litert": litert_report(), "delegates": delegates_report(),
           "delegate_paths": delegate_paths_report(delegate_paths),
           "onnxruntime": onnxruntime_report(), "board": board_report(), "extras": extras_report()}
    problems = []
    if not rep["litert"]["found"] and not rep["onnxruntime"]["found"]:
        problems.append("no model runtime: install ai-edge-litert or onnxruntime")
    for name, d in rep["delegates"].items():
        if d and d["loadable"] is not True:
            problems.append(f"delegate {name} found at {d['path']} but cannot be loaded: {d['loadable']}")
    for path, ok in rep["delegate_paths"].items():
        if ok is not True:
            problems.append(f"delegate {path} cannot be loaded: {ok}")
    rep["problems"] = problems
    return rep


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--delegate", "delegates", multiple=True, metavar="PATH",
              help="Also try to load this external delegate library, as `ganglion run --delegate PATH` would "
                   "(repeatable). A path that cannot serve as a delegate is a problem line.")
def doctor(as_json, delegates):
    """Report interpreters, delegates and providers found on this machine.

    \b
    Examples:
      ganglion doctor
      ganglion doctor --delegate /usr/lib/libedgetpu.so.1 --json
    """
    rep = report(delegates)
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        _print(rep)
    if rep["problems"] and not (rep["litert"]["found"] or rep["onnxruntime"]["found"]):
        raise SystemExit(1)


def _print(rep: dict) -> None:
    lite, ort, board = rep["litert"], rep["onnxruntime"], rep["board"]
    click.echo(f"python        {rep['python']}")
    click.echo(f"litert        {lite['package'] + ' ' + lite['version'] if lite['found'] else 'MISSING: ' + lite['hint']}"
               + (f"  (XNNPACK {lite['xnnpack']})" if lite["found"] else ""))
    click.echo(f"onnxruntime   {ort['version'] + '  providers: ' + ', '.join(ort['providers']) if ort['found'] else 'not installed (' + ort['hint'] + ')'}")
    for name, d in rep["delegates"].items():
        state = "not found" if d is None else f"{d['path']}" + ("" if d["loadable"] is True else "  (NOT loadable)")
        click.echo(f"delegate      {name:<20} {state}")
    for path, ok in rep["delegate_paths"].items():
        click.echo(f"delegate      {path}  " + ("(loads)" if ok is True else "(NOT loadable)"))
    click.echo(f"board         {board['board'] or 'unknown'}  ({board['machine']}, {board['cpus']} cpus"
               + (f", {board['device_tree_model']}" if board["device_tree_model"] else "") + ")")
    click.echo(f"thermal       {', '.join(board['thermal_sensors']) or 'no sensors'}")
    click.echo("extras        " + ", ".join(f"{k} {v or 'missing'}" for k, v in rep["extras"].items()))
    for p in rep["problems"]:
        click.echo(f"problem: {p}")
