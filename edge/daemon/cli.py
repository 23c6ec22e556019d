"""``ganglion run`` (the daemon) and ``ganglion bench`` (device-side latency of a model).

``run`` takes a TOML config, plain flags, or both (flags win). Paths in the config file are
relative to the file; paths in flags are relative to the working directory.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from core.config import Backend, Isolation, values
from core.errors import EXIT_PERMANENT, GanglionError, InputError, UsageError
from core.vocab import broker_tls, json_flag, mqtt_version, trusted_keys
from edge.daemon import config as cfgmod
from edge.daemon import tree
from edge.daemon.app import Daemon, serve
from edge.daemon.benchmark import bench_model
from edge.daemon.sdnotify import unit_file


def _abs(p: str | None) -> str | None:
    return str(Path(p).resolve()) if p else None


def build_config(config: str | None, flags: dict):
    """TOML table (if any) + flags -> a checked DaemonConfig."""
    if config:
        base = cfgmod.load_toml(config)
        table = base.model_dump()
    else:
        table = {}
    model = table.setdefault("model", {})
    for key in ("backend", "threads", "delegate"):
        if flags.get(key) is not None:
            model[key] = flags[key]
    if flags.get("model"):
        model["path"] = _abs(flags["model"])
    if flags.get("delegate"):
        model["delegate"] = flags["delegate"]
    if flags.get("allow_cpu_fallback"):
        model["allow_cpu_fallback"] = True
    if flags.get("trusted_key"):
        model["trusted_keys"] = [_abs(k) for k in flags["trusted_key"]]
    if flags.get("firmware_key"):
        table.setdefault("firmware", {})["trusted_keys"] = [_abs(k) for k in flags["firmware_key"]]
    if flags.get("device_id"):
        table["device_id"] = flags["device_id"]
    if flags.get("board"):
        table["board"] = flags["board"]
    for section, key, flag in (("workers", "count", "workers"), ("workers", "isolation", "isolation"),
                               ("batch", "max_batch", "max_batch"),
                               ("batch", "budget_ms", "budget_ms"), ("metrics", "interval_s", "metrics_interval")):
        if flags.get(flag) is not None:
            table.setdefault(section, {})[key] = flags[flag]
    tel = table.setdefault("telemetry", {})
    if flags.get("broker"):        # repeatable: a failover list in order of preference
        tel["broker"], tel["brokers"] = flags["broker"][0], list(flags["broker"])
    if tel.get("brokers") and not tel.get("broker"):
        tel["broker"] = tel["brokers"][0]
    for key in ("ca_file", "cert_file", "key_file"):
        if flags.get(key):
            tel[key] = _abs(flags[key])
    for key in ("username", "password", "mqtt_version"):
        if flags.get(key) is not None:
            tel[key] = flags[key]
    if flags.get("spool"):
        tel["spool"] = _abs(flags["spool"])
    sources = list(table.get("sources") or [])
    sources += [{"kind": "folder", "path": _abs(d)} for d in flags.get("watch") or ()]
    sources += [{"kind": "replay", "path": _abs(f)} for f in flags.get("replay") or ()]
    sources += [{"kind": "mqtt", "topic": t} for t in flags.get("mqtt_input") or ()]
    if flags.get("camera") is not None:
        sources.append({"kind": "camera", "device": flags["camera"]})
    sinks = list(table.get("sinks") or [])
    sinks += [{"kind": "jsonl", "path": _abs(f)} for f in flags.get("jsonl") or ()]
    if flags.get("stdout"):
        sinks.append({"kind": "stdout"})
    if not sinks:
        sinks.append({"kind": "mqtt"} if tel.get("broker") else {"kind": "stdout"})
    table["sources"], table["sinks"] = sources, sinks
    table = {k: v for k, v in table.items() if v not in (None,)}
    return cfgmod.from_dict(_drop_none(table)).require_model()


def _unit_args(argv: list[str]) -> list[str]:
    """The command line for ExecStart: this invocation's flags minus the unit-printing ones."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--print-systemd-unit" or arg.startswith("--watchdog-sec="):
            continue
        elif arg == "--watchdog-sec":
            skip = True
        else:
            out.append(arg)
    return out


def _drop_none(table):
    if isinstance(table, dict):
        return {k: _drop_none(v) for k, v in table.items() if v is not None}
    if isinstance(table, list):
        return [_drop_none(v) for v in table]
    return table


@click.command("run")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML config file (see docs/daemon.md).")
@click.option("--model", help=".gpk artifact, .tflite or .onnx file.")
@click.option("--broker", multiple=True, help="MQTT broker URL, e.g. mqtt://127.0.0.1:1883 (telemetry, commands, "
              "results); repeat for a failover list, in order of preference.")
@broker_tls
@mqtt_version(default=None)
@click.option("--device-id", help="Device id: one MQTT topic level.")
@click.option("--watch", multiple=True, help="Watched folder (repeatable); files move to done/ or failed/.")
@click.option("--replay", multiple=True, help=".npy/.npz file of samples to replay (repeatable).")
@click.option("--mqtt-input", multiple=True, help="MQTT topic to take inputs from (repeatable).")
@click.option("--camera", help="Frames from OpenCV: a camera index (0), /dev/videoN, an rtsp:// or http:// "
              "stream, or a video file (played at its frame rate). Needs: pip install 'ganglion-edge[camera]'.")
@click.option("--jsonl", multiple=True, help="Write results to this JSONL file (repeatable).")
@click.option("--stdout", is_flag=True, help="Write results to stdout as JSON lines.")
@click.option("--board", help="Board name or .toml (threads, backend, delegate, thermal sensor).")
@click.option("--backend", type=click.Choice(values(Backend)), help="Override the board's backend.")
@click.option("--threads", type=int, help="Interpreter threads per worker.")
@click.option("--delegate", help="External delegate library path (e.g. libedgetpu.so.1).")
@click.option("--allow-cpu-fallback", is_flag=True, help="Run on the CPU if the delegate/provider is missing.")
@trusted_keys("Public key (.pub); the model must be a .gpk signed by one of these (repeatable). "
              "A bare .tflite/.onnx is then refused.", old=())
@click.option("--workers", type=int, help="Model worker processes.")
@click.option("--isolation", type=click.Choice(values(Isolation)),
              help="Workers as processes (default: a crash costs one restart) or threads in the daemon "
                   "(less overhead per request; a native crash takes the daemon down).")
@click.option("--max-batch", type=int, help="Largest micro-batch.")
@click.option("--budget-ms", type=float, help="Longest a request waits for its batch to fill.")
@click.option("--metrics-interval", type=float, help="Seconds between metrics records.")
@click.option("--spool", help="Telemetry spool (SQLite) path.")
@click.option("--firmware-root", help="Run the active A/B firmware slot under this root (model, config, "
                                     "wheels from the slot; validated on a trial boot; OTA over MQTT).")
@trusted_keys("Public key (.pub) that signs firmware bundles: re-checked when a trial slot is validated, "
              "required for OTA (deploy-firmware). Not the same as --trusted-key (model artifacts).",
              flag="--firmware-trusted-key", dest="firmware_key", old=("--firmware-key",))
@click.option("--dry-run", is_flag=True, help="Print the supervision tree and exit (checks paths, writes nothing).")
@click.option("--write-config", "write_config", type=click.Path(dir_okay=False),
              help="Write a commented starter daemon.toml to this path and exit (never overwrites).")
@click.option("--print-systemd-unit", is_flag=True, help="Print a systemd unit (Type=notify, WatchdogSec) and exit.")
@click.option("--watchdog-sec", type=int, default=30, show_default=True, help="WatchdogSec for the printed unit.")
def run(config, dry_run, write_config, print_systemd_unit, watchdog_sec, firmware_root, **flags):
    """Run the supervised inference daemon.

    \b
    Examples:
      ganglion run --model digits.gpk --watch ./in --jsonl results.jsonl
      ganglion run --model digits.gpk --trusted-key signer.key.pub --broker mqtt://127.0.0.1:1883 \\
          --device-id cam1 --mqtt-input ganglion/v1/cam1/in
      ganglion run --write-config daemon.toml && ganglion run --config daemon.toml --dry-run
      ganglion run --config daemon.toml --print-systemd-unit > ganglion.service
    \b
    Defaults: 1 worker process, greedy batches of <= 8, queue 64, metrics every 10 s, results to
    stdout (to MQTT with --broker). Exit codes: docs/cli.md (78: cannot start, do not restart).
    """
    if write_config:
        write_starter_config(write_config)
        click.echo(f"wrote {write_config}; set [model] path, then: ganglion run --config {write_config} --dry-run")
        return
    try:
        _run(config, dry_run, print_systemd_unit, watchdog_sec, firmware_root, flags)
    except GanglionError as exc:
        if exc.permanent and not (dry_run or print_systemd_unit):
            # systemd must not restart forever on a missing model or a bad signature: its own
            # code, named in the unit's RestartPreventExitStatus (core/errors.py: exit codes)
            exc.exit_code = EXIT_PERMANENT
        raise


STARTER_CONFIG = Path(__file__).with_name("daemon.example.toml")


def write_starter_config(path: str) -> None:
    """The shipped, commented example config, written where the user asks (never over a file)."""
    try:
        with open(path, "x", encoding="utf-8") as fh:
            fh.write(STARTER_CONFIG.read_text(encoding="utf-8"))
    except FileExistsError:
        raise UsageError(f"{path} exists; not overwriting it", where=path, code="usage.config",
                         hint="choose another path or remove the file") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}", where=path, code="usage.config") from exc


def _check_model(cfg):
    if not Path(cfg.model.path).is_file():
        raise InputError(f"model file not found: {cfg.model.path}", where="model.path", code="input.not_found",
                         hint="pass --model FILE (.gpk, .tflite or .onnx) or set [model] path in the config")
    return cfg


def _run(config, dry_run, print_systemd_unit, watchdog_sec, firmware_root, flags):
    """Flags -> config -> ``app.serve`` (the daemon is wired by ``tree``, the same for embedders)."""
    if print_systemd_unit:
        if not firmware_root:                     # the slot brings the model; otherwise it must be here
            _check_model(build_config(config, flags))
        args = _unit_args(sys.argv[sys.argv.index("run") + 1:] if "run" in sys.argv else [])
        click.echo(unit_file(args, watchdog_s=watchdog_sec))
        return
    firmware = None if dry_run else tree.boot_firmware(firmware_root)
    if firmware is not None:
        model, slot_config = firmware.defaults()
        flags["model"] = flags.get("model") or model
        config = config or slot_config
    cfg = _check_model(build_config(config, flags))
    if dry_run:
        click.echo(tree.describe(Daemon(cfg, dry_run=True)))
        return
    code = serve(cfg, firmware)
    if code:
        raise SystemExit(code)


@click.command("bench")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--runs", type=int, default=200, show_default=True, help="Timed runs per thread count.")
@click.option("--warmup", type=int, default=20, show_default=True, help="Untimed runs first.")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts to compare.")
@click.option("--batch", type=int, default=1, show_default=True, help="Samples per run.")
@click.option("--backend", type=click.Choice(values(Backend)))
@click.option("--board", help="Board name (its threads/delegate/backend apply unless overridden).")
@click.option("--delegate", help="External delegate library path.")
@click.option("--allow-cpu-fallback", is_flag=True, help="Run on the CPU if the delegate/provider is missing.")
@json_flag("Print JSON instead of the table.")
def bench(model, runs, warmup, threads, batch, backend, board, delegate, allow_cpu_fallback, as_json):
    """Device-side latency benchmark of an artifact: warmup, N runs, p50/p95/p99 per thread count.

    \b
    Examples:
      ganglion bench digits.gpk --threads 1,2,4
      ganglion bench model.onnx --batch 8 --runs 500 --json
      ganglion bench digits.gpk --board coral-devboard --delegate libedgetpu.so.1
    """
    try:
        counts = [int(t) for t in threads.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"--threads must be comma-separated integers, got {threads!r}", code="usage.flags")
    if runs < 1 or warmup < 0 or batch < 1 or not counts:
        raise UsageError("--runs and --batch must be >= 1, --warmup >= 0", code="usage.flags")
    rows = [bench_model(model, runs=runs, warmup=warmup, threads=t, batch=batch, backend=backend, board=board,
                        delegate=delegate, allow_cpu_fallback=allow_cpu_fallback, progress=not as_json)
            for t in counts]
    if as_json:
        click.echo(json.dumps({"model": model, "results": rows}, indent=2))
        return
    head = f"{'backend':<12}{'threads':>8}{'batch':>6}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'inf/s':>10}"
    click.echo(head)
    for r in rows:
        click.echo(f"{r['backend']:<12}{r['threads']:>8}{r['batch']:>6}{r['p50_ms']:>10.3f}{r['p95_ms']:>10.3f}"
                   f"{r['p99_ms']:>10.3f}{r['mean_ms']:>10.3f}{r['throughput']:>10.1f}")
