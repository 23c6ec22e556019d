"""Daemon vs bare interpreter, side by side: overhead per inference, throughput, RSS, time to ready.

    .venv/bin/python bench/daemon_bench.py [--models digits,mobilenet_v2] [--runs 300] [--threads 2]
                                           [--rounds 3] [--json out.json] [--workdir DIR]

Each model is converted once to an int8 .gpk with ``ganglion convert`` (digits: its real
calibration set; MobileNetV2-style 224x224: 64 N(0,1) samples). Then, each in a fresh child
process so memory figures are clean:

  floor      once, no model: a raw pipe round trip between two processes (64 bytes), two thread
             hand-offs (a request to another thread and an Event back), and one
             request through a Daemon whose worker runs x -> 2x on four floats (queue + two
             thread hand-offs + two pipe hops + framing + result routing). No model can be served
             with less overhead than the echo: it is the yardstick for the 5% target.
  latency    in one process, blocks of 50 calls alternate between the bare LiteRT interpreter
             (set_tensor/invoke/get_tensor, batch 1) and a Daemon with 1 worker process and
             max_batch 1, two ways: "sync" = ``Daemon.infer`` (the calling thread talks to the idle
             worker itself: validation + shared memory + two pipe hops + worker + result routing)
             and "async" = ``Daemon.submit`` + wait for ``on_done`` (what the MQTT, replay and camera
             sources use: adds the queue and two thread hand-offs), RUNS calls each -> medians and
             p95; the first 5 calls of a block are not timed (the other side's threads spin down).
             Pairing matters on a shared machine, where the load changes faster than a run lasts.
             A fourth side in the same rotation: ``Daemon.infer`` with the opt-in in-process worker
             (isolation = "thread": the calling thread runs the backend itself when it is idle).
  throughput three pairs of rounds: RUNS sequential bare calls, then RUNS requests submitted to
             the daemon at once (open loop: a saturating load) -> inf/s of each, ratio = median of
             the three daemon/bare ratios. Three ways of using the same cores: "mb" one worker with
             greedy micro-batches of up to 8, "w2" two workers with half the threads each, no
             batching, and "mb2" two workers with half the threads each and micro-batches of up to 8
             (the daemon's defaults with workers = cores)
  RSS        bare process vs daemon process + its worker after the batch-1 phase (like for like)
  ready      ``ganglion run --model M --watch DIR`` as a subprocess: spawn -> READY=1 on a real
             NOTIFY_SOCKET (model loaded in a worker); and, with a private mosquitto when one is
             installed, spawn -> retained status "online" naming the model, seen by a subscriber

  pipeline   the source -> sink path with a worker process (edge/daemon/lane.py): a watched folder of
             .npy inputs -> model -> a JSONL file, files moved to done/. Three sides take turns in
             blocks of PIPE_BLOCK inputs: "bare" = the bare interpreter alone (the inference, no I/O),
             "inproc" = one process running the same folder and sink code around an in-process
             interpreter (no daemon, no worker: what a hand-written loop with the same I/O costs), and
             "daemon" = ``Daemon`` with a folder source and a JSONL sink, where the worker process reads
             the folder and writes the results itself while the parent supervises. A block's time per
             input is (last done - first done) / (n - 1), seen by this process polling done/ every ms
             (it runs on neither side), so the folder's 0.1 s scan interval does not count.
             pipe_overhead = daemon / inproc - 1 (target <= 5%: what the worker process adds);
             pipe_vs_bare = daemon / bare - 1 (also counts the file I/O and JSON the bare loop skips).
             The inproc and daemon sides are child processes of their own; the CPU time of all their
             threads (daemon: parent + worker) per input is summed over the blocks from
             /proc/PID/task/TID/schedstat -> pipe_cpu_overhead, a figure that a loaded machine
             disturbs far less than wall time

Ratios: overhead = daemon b1 ms / bare ms - 1 (target <= 5%; sync and async); mb/w2/mb2 ratio =
daemon inf/s / bare inf/s (target >= 1); RSS delta = daemon (+ worker) - bare (target <= 40 MB); ready (< 2 s).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GANGLION = str(Path(sys.executable).parent / "ganglion")
BLOCK, SETTLE = 50, 5         # latency blocks alternate bare/daemon; the first SETTLE calls are not timed
PIPE_BLOCK = 50               # inputs per block of the source -> sink comparison


def rss_mb(pids) -> float:
    from edge.daemon.metrics import _rss
    return round(sum(_rss(p) for p in pids) / 2**20, 1)


# -- preparing models ----------------------------------------------------------------------------
def prepare(name: str, workdir: Path) -> Path:
    out = workdir / f"{name}.gpk"
    if out.exists():
        return out
    if name == "digits":
        onnx_path, calib = ROOT / "examples/digits/digits_cnn.onnx", ROOT / "examples/digits/calib.npz"
    else:
        import onnx
        from examples.models import mobilenet_v2
        onnx_path, calib = workdir / "mobilenet_v2.onnx", workdir / "mnv2_calib.npz"
        onnx.save(mobilenet_v2.build(), str(onnx_path))
        x = np.random.default_rng(0).normal(size=(64, 3, 224, 224)).astype(np.float32)
        name_in = onnx.load(str(onnx_path), load_external_data=False).graph.input[0].name
        np.savez(calib, **{name_in: x})
    res = subprocess.run([GANGLION, "convert", str(onnx_path), "--calib", str(calib), "-o", str(out)],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if res.returncode != 0:
        raise SystemExit(f"convert {name} failed:\n{res.stderr[-2000:]}")
    return out


# -- children ------------------------------------------------------------------------------------
class Bare:
    """The bare LiteRT interpreter, driven the way a hand-written loop would."""

    def __init__(self, model: str, threads: int):
        from core import artifact
        from edge.backends.litert_backend import _spec
        from edge.daemon.benchmark import sample_feeds
        from core.litert import make_interpreter
        self.interp = make_interpreter(artifact.read(model).model_bytes("tflite"), num_threads=threads)
        self.ins, self.outs = self.interp.get_input_details(), self.interp.get_output_details()
        feeds = sample_feeds([_spec(d) for d in self.ins], 1)
        self.arrays = [feeds[d["name"]] for d in self.ins]

    def __call__(self):
        for d, a in zip(self.ins, self.arrays):
            self.interp.set_tensor(d["index"], a)
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]) for d in self.outs]


def child_bare(model: str, runs: int, threads: int) -> dict:
    """A process that only holds the bare interpreter: its RSS is the baseline."""
    bare = Bare(model, threads)
    for _ in range(runs):
        bare()
    return {"rss_mb": rss_mb([os.getpid()])}


def _daemon(model: str, threads: int, max_batch: int, budget: float, queue: int, workers: int = 1,
            isolation: str = "process", sources=(), sinks=()):
    from edge.daemon.app import Daemon
    from edge.daemon.config import from_dict
    from edge.daemon.outbox import MemoryOutbox
    cfg = from_dict({"model": {"path": model, "threads": threads},
                     "workers": {"count": workers, "isolation": isolation},
                     "batch": {"max_batch": max_batch, "budget_ms": budget, "queue_size": queue},
                     "metrics": {"interval_s": 3600}, "sources": list(sources), "sinks": list(sinks)}).require_model()
    return Daemon(cfg, outbox=MemoryOutbox()).start()


def child_daemon(model: str, runs: int, threads: int) -> dict:
    """Paired measurements: bare and daemon blocks alternate in one process, so both see the same
    machine load (this matters on a shared machine: the noise is larger than the effect)."""
    from edge.daemon.benchmark import sample_feeds
    d = _daemon(model, threads, 1, 0.0, 4 * runs)
    feeds = sample_feeds(d.pool.info.inputs, 1)
    one = _round_trip(d, feeds)
    for _ in range(20):
        one()
    rss_b1 = rss_mb([os.getpid(), *d.pool.pids()])          # before the bare interpreter exists here
    bare = Bare(model, threads)
    for _ in range(20):
        bare()
    inline = _daemon(model, threads, 1, 0.0, 4 * runs, isolation="thread")    # opt-in, no process
    bare_t, sync_t, daemon_t, inline_t = _paired([bare, lambda: d.infer(dict(feeds)), one,
                                                  lambda: inline.infer(dict(feeds))], runs)
    for x in (d, inline):
        x.stop()
        x.shutdown()
    out = {"bare_ms": _ms(bare_t, 50), "sync_ms": _ms(sync_t, 50), "daemon_ms": _ms(daemon_t, 50),
           "inline_ms": _ms(inline_t, 50), "bare_p95_ms": _ms(bare_t, 95), "sync_p95_ms": _ms(sync_t, 95),
           "daemon_p95_ms": _ms(daemon_t, 95), "rss_mb": rss_b1}
    # Throughput under a saturating load, two ways to spend the same cores: one worker with greedy
    # micro-batches of up to 8, or two workers with half the threads each and no batching. Each
    # daemon round is paired with a bare round just before it; the ratio is the median of the pairs.
    half = max(1, threads // 2)
    for key, workers, wthreads, max_batch in (("mb", 1, threads, 8), ("w2", 2, half, 1), ("mb2", 2, half, 8)):
        d = _daemon(model, wthreads, max_batch, 0.0, 8 * runs, workers=workers)
        _open_loop(d, feeds, 40)                              # warm every worker
        pairs = [(_bare_rate(bare, runs), _open_loop(d, feeds, runs)) for _ in range(3)]
        out[f"bare_{key}_inf_s"] = max(b for b, _ in pairs)
        out[f"{key}_inf_s"] = max(r for _, (r, _) in pairs)
        out[f"{key}_ratio"] = float(np.median([r / b for b, (r, _) in pairs]))
        out[f"{key}_mean_batch"] = round(pairs[-1][1][1], 2)
        d.stop()
        d.shutdown()
    out["bare_inf_s"] = max(out["bare_mb_inf_s"], out["bare_w2_inf_s"], out["bare_mb2_inf_s"])
    return out


def child_echo(runs: int) -> dict:
    """The floor under any model: a raw pipe round trip between two processes, and one request
    through the daemon to a worker whose 'model' is x -> 2x on four floats (no interpreter)."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_echo_worker, args=(child,), daemon=True)
    proc.start()
    msg = bytes(64)

    def pipe():
        parent.send_bytes(msg)
        parent.recv_bytes()
    pipe_t = _timed(pipe, 20 * runs)
    parent.close()
    proc.join(5)
    from edge.daemon.app import Daemon
    from edge.daemon.config import from_dict
    from edge.daemon.outbox import MemoryOutbox
    cfg = from_dict({"model": {"path": "echo.tflite"}, "batch": {"max_batch": 1, "budget_ms": 0},
                     "metrics": {"interval_s": 3600}}).require_model()
    d = Daemon(cfg, outbox=MemoryOutbox(), factory="edge.backends.memory:doubler").start()
    x4 = {"x": np.ones((1, 4), np.float32)}
    echo_t = _timed(_round_trip(d, x4), 20 * runs)
    sync_t = _timed(lambda: d.infer(dict(x4)), 20 * runs)
    d.stop()
    d.shutdown()
    return {"pipe_us": _ms(pipe_t, 50) * 1e3, "pipe_p95_us": _ms(pipe_t, 95) * 1e3,
            "hops_us": _ms(_timed(_two_hops(), 20 * runs), 50) * 1e3,
            "echo_us": _ms(echo_t, 50) * 1e3, "echo_p95_us": _ms(echo_t, 95) * 1e3,
            "echo_sync_us": _ms(sync_t, 50) * 1e3, "echo_sync_p95_us": _ms(sync_t, 95) * 1e3}


def child_inproc(model: str, folder: str, out: str, threads: int) -> None:
    """The source -> sink loop without a daemon: the folder source and JSONL sink code the worker
    runs (``lane.LaneHost``) around an interpreter in this process, until stdin closes."""
    from edge.backends import open_backend
    from edge.daemon.lane import LaneHost
    from edge.daemon.sinks import make_sink
    from edge.daemon.sources import FolderSource
    from edge.daemon.worker import ModelInfo, ready_header, run_once
    backend = open_backend(model, threads=threads)
    specs = backend.outputs()
    host = LaneHost("inproc", lambda feeds: run_once(backend, feeds, specs), ModelInfo(ready_header(backend)),
                    [make_sink("jsonl", path=out)], send=lambda msg: None)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"pids": [os.getpid()]}), flush=True)
    FolderSource(host, folder).run(stop)


def child_lane_daemon(model: str, folder: str, out: str, threads: int) -> None:
    """A daemon whose worker reads ``folder`` and writes ``out`` itself, until stdin closes."""
    d = _daemon(model, threads, 1, 0.0, 64, sources=[{"kind": "folder", "path": folder}],
                sinks=[{"kind": "jsonl", "path": out}])
    if not d.lane_sources:
        raise SystemExit("the daemon did not give the folder to its worker")
    print(json.dumps({"pids": [os.getpid(), *d.pool.pids()]}), flush=True)
    sys.stdin.read()
    d.stop()
    d.shutdown()


def child_pipeline(model: str, runs: int, threads: int) -> dict:
    """bare / inproc / daemon blocks of PIPE_BLOCK inputs in turn (see the module docstring)."""
    from edge.backends.base import TensorSpec
    from edge.daemon.benchmark import sample_feeds
    work = Path(tempfile.mkdtemp(prefix="pipeline-", dir=os.environ.get("BENCH_WORKDIR")))
    bare = Bare(model, threads)
    (x,) = sample_feeds([TensorSpec(d["name"], np.dtype(d["dtype"]).name, tuple(d["shape"]))
                         for d in bare.ins], 1).values()
    procs, pids = {}, {"bare": [os.getpid()]}
    for side in ("inproc", "daemon"):
        procs[side] = subprocess.Popen([sys.executable, __file__, "--child", f"pipe-{side}", model, "--threads",
                                        str(threads), "--folder", str(work / side), "--out",
                                        str(work / f"{side}.jsonl")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True)
        pids[side] = json.loads(procs[side].stdout.readline())["pids"]
    stages = {side: _stage(work / f"stage-{side}", x) for side in procs}
    for side in procs:                           # warm both sides (first files, page cache, threads)
        _pipe_block(work / side, stages[side])
    wall = {side: [] for side in pids}
    cpu = {side: 0 for side in pids}
    for _ in range(max(1, runs // PIPE_BLOCK)):
        for side in pids:
            c0 = _cpu_ns(pids[side])
            wall[side].append(_bare_block(bare) if side == "bare" else _pipe_block(work / side, stages[side]))
            cpu[side] += _cpu_ns(pids[side]) - c0
    for proc in procs.values():
        proc.stdin.close()
        proc.wait(30)
    n = PIPE_BLOCK * len(wall["bare"])
    out = {f"pipe_{k}_ms": float(np.median(v)) * 1e3 for k, v in wall.items()}
    out.update({f"pipe_{k}_cpu_ms": c / n / 1e6 for k, c in cpu.items()})
    out["pipe_overhead"] = float(np.median([dm / ip - 1 for dm, ip in zip(wall["daemon"], wall["inproc"])]))
    out["pipe_vs_bare"] = float(np.median([dm / b - 1 for dm, b in zip(wall["daemon"], wall["bare"])]))
    out["pipe_cpu_overhead"] = cpu["daemon"] / cpu["inproc"] - 1
    return out


def _cpu_ns(pids) -> int:
    """CPU time of every thread of ``pids`` so far, in ns (/proc/PID/task/TID/schedstat: ns
    resolution, where /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    total += int(fh.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass                               # a thread that just ended
    return total


def _stage(folder: Path, x: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i in range(PIPE_BLOCK):
        np.save(folder / f"x{i:03d}.npy", x)
    return folder


def _pipe_block(inbox: Path, stage: Path) -> float:
    """Move a block of staged inputs into ``inbox``; seconds per input between the first and last
    result, polled every ms from here; then the inputs go back to the stage."""
    names = sorted(os.listdir(stage))
    done = inbox / "done"
    for n in names:
        os.rename(stage / n, inbox / n)
    first = last = None
    while True:
        count = len(os.listdir(done))
        now = time.perf_counter()
        if count and first is None:
            first = now
        if count >= len(names):
            last = now
            break
        time.sleep(0.001)
    for n in names:
        os.rename(done / n, stage / n)
    return (last - first) / (len(names) - 1)


def _bare_block(bare) -> float:
    for _ in range(SETTLE):
        bare()
    t0 = time.perf_counter()
    for _ in range(PIPE_BLOCK):
        bare()
    return (time.perf_counter() - t0) / PIPE_BLOCK


def _two_hops():
    """A request handed to another thread and its answer handed back, nothing else: the part of
    the echo that any asynchronous submit/on_done API pays in Python."""
    import queue
    inbox = queue.SimpleQueue()

    def serve():
        while True:
            inbox.get().set()
    threading.Thread(target=serve, daemon=True).start()

    def hop():
        done = threading.Event()
        inbox.put(done)
        done.wait()
    return hop


def _echo_worker(conn) -> None:
    while True:
        try:
            conn.send_bytes(conn.recv_bytes())
        except (EOFError, OSError):
            return


def _round_trip(d, feeds):
    """One request through the daemon, waiting for its answer (what a batch-1 client sees)."""
    done = threading.Event()

    def one():
        done.clear()
        d.submit("bench", dict(feeds), {}, lambda r: done.set())
        done.wait()
    return one


def _paired(fns, runs: int) -> list[list[float]]:
    """Blocks of BLOCK calls of each function in turn, RUNS timed calls each."""
    times = [[] for _ in fns]
    for _ in range(max(1, runs // BLOCK)):
        for fn, out in zip(fns, times):
            for i in range(BLOCK + SETTLE):
                t0 = time.perf_counter()
                fn()
                if i >= SETTLE:       # the other side's threads may still be spinning down
                    out.append(time.perf_counter() - t0)
    return times


def _timed(fn, n: int) -> list[float]:
    for _ in range(min(200, n)):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _ms(samples: list[float], pct: float) -> float:
    return float(np.percentile(samples, pct) * 1e3)


def _bare_rate(bare, runs: int) -> float:
    t0 = time.perf_counter()
    for _ in range(runs):
        bare()
    return runs / (time.perf_counter() - t0)


def _open_loop(d, feeds, n: int) -> tuple[float, float]:
    """Submit n requests at once; inf/s until the last answer, and the mean batch size."""
    count, all_done, lock = [0], threading.Event(), threading.Lock()
    b0, r0 = d.batcher.batches, d.batcher.batched_requests

    def on_done(_):
        with lock:
            count[0] += 1
            if count[0] == n:
                all_done.set()
    t0 = time.perf_counter()
    for _ in range(n):
        d.submit("bench", dict(feeds), {}, on_done)
    all_done.wait()
    rate = n / (time.perf_counter() - t0)
    return rate, (d.batcher.batched_requests - r0) / max(d.batcher.batches - b0, 1)


def ready_time(model: str, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "n.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(30)
        t0 = time.monotonic()
        proc = subprocess.Popen([GANGLION, "run", "--model", model, "--watch", os.path.join(tmp, "in"),
                                 "--threads", str(threads)], env=dict(os.environ, NOTIFY_SOCKET=path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
            return time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait(30)
            sock.close()


def ready_online_time(model: str, threads: int, broker) -> float | None:
    """Spawn -> the retained status 'online' with the model named, seen by a subscriber."""
    if broker is None:
        return None
    from edge.telemetry.config import parse_broker_url
    from edge.telemetry.mqtt import MqttClient
    device = f"bench{os.getpid()}{int(time.time() * 1000) % 100000}"
    seen = threading.Event()

    def on_status(msg):
        data = json.loads(msg.payload).get("data", {})
        if data.get("state") == "online" and data.get("model"):
            seen.set()
    sub = MqttClient(parse_broker_url(broker.url), client_id=f"sub-{device}")
    sub.subscribe(f"ganglion/v1/{device}/status", on_status)
    sub.connect()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        proc = subprocess.Popen([GANGLION, "run", "--model", model, "--broker", broker.url, "--device-id", device,
                                 "--spool", os.path.join(tmp, "spool.db"), "--threads", str(threads)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return time.monotonic() - t0 if seen.wait(30) else float("nan")
        finally:
            proc.terminate()
            proc.wait(30)
            sub.stop()


def start_broker(workdir: Path):
    """A private mosquitto (tests/fixtures/broker.py), or None when it is not installed."""
    from tests.fixtures.broker import MOSQUITTO, Mosquitto
    if not os.access(MOSQUITTO, os.X_OK):
        return None
    return Mosquitto(workdir / "mosquitto").start()


def run_child(kind: str, model: Path, runs: int, threads: int) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", kind, str(model), "--runs", str(runs),
                          "--threads", str(threads)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="digits,mobilenet_v2")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="time-to-ready attempts; the best is kept")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--workdir")
    ap.add_argument("--only", choices=("pipeline",), help="just the source -> sink comparison")
    ap.add_argument("--child", nargs=2, metavar=("KIND", "MODEL"))
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, model = args.child
        if kind == "echo":
            print(json.dumps(child_echo(args.runs)))
        elif kind in ("pipe-inproc", "pipe-daemon"):
            (child_inproc if kind == "pipe-inproc" else child_lane_daemon)(model, args.folder, args.out, args.threads)
        else:
            fn = {"bare": child_bare, "daemon": child_daemon, "pipeline": child_pipeline}[kind]
            print(json.dumps(fn(model, args.runs, args.threads)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ganglion-daemon-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["BENCH_WORKDIR"] = str(workdir)          # the pipeline child's folders go there too
    load_before = os.getloadavg()
    rows = []
    only = args.only == "pipeline"
    broker = None if only else start_broker(workdir)
    floor = {} if only else run_child("echo", Path("-"), args.runs, args.threads)
    for name in args.models.split(","):
        model = prepare(name, workdir)
        pipe = {k: round(v, 4) for k, v in run_child("pipeline", model, args.runs, args.threads).items()}
        pipe["pipe_target_met"] = pipe["pipe_overhead"] <= 0.05
        if only:
            rows.append({"model": name, "threads": args.threads, "runs": args.runs, **pipe})
            continue
        bare = run_child("bare", model, args.runs, args.threads)
        paired = run_child("daemon", model, args.runs, args.threads)
        ready = min(ready_time(str(model), args.threads) for _ in range(args.rounds))
        online = min((ready_online_time(str(model), args.threads, broker) for _ in range(args.rounds)),
                     default=None) if broker else None
        rows.append({**_row(name, args, paired, bare, ready, online), **pipe})
    if broker is not None:
        broker.stop()
    report = {"bench": "daemon", "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
              "floor": {k: round(v, 1) for k, v in floor.items()}, "results": rows}
    print(json.dumps(report, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))
    _table(rows, floor)


def _row(name: str, args, paired: dict, bare: dict, ready: float, online: float | None) -> dict:
    r = {"model": name, "threads": args.threads, "runs": args.runs}
    r.update({k: round(v, 4) for k, v in paired.items() if k.endswith("_ms")})
    r["sync_overhead"] = round(paired["sync_ms"] / paired["bare_ms"] - 1, 4)
    r["sync_overhead_ms"] = round(paired["sync_ms"] - paired["bare_ms"], 4)
    r["overhead"] = round(paired["daemon_ms"] / paired["bare_ms"] - 1, 4)
    r["overhead_ms"] = round(paired["daemon_ms"] - paired["bare_ms"], 4)
    r["inline_overhead"] = round(paired["inline_ms"] / paired["bare_ms"] - 1, 4)
    for key in ("mb", "w2", "mb2"):
        r[f"bare_{key}_inf_s"] = round(paired[f"bare_{key}_inf_s"], 1)
        r[f"daemon_{key}_inf_s"] = round(paired[f"{key}_inf_s"], 1)
        r[f"{key}_ratio"] = round(paired[f"{key}_ratio"], 3)
        r[f"{key}_mean_batch"] = paired[f"{key}_mean_batch"]
    r.update({"bare_rss_mb": bare["rss_mb"], "daemon_rss_mb": paired["rss_mb"],
              "rss_delta_mb": round(paired["rss_mb"] - bare["rss_mb"], 1), "ready_s": round(ready, 3),
              "ready_online_s": round(online, 3) if online is not None else None})
    r["targets_met"] = {"overhead_5pct_sync": r["sync_overhead"] <= 0.05, "overhead_5pct_async": r["overhead"] <= 0.05,
                        "throughput_mb": r["mb_ratio"] >= 1.0, "throughput_mb2": r["mb2_ratio"] >= 1.0,
                        "rss_40mb": r["rss_delta_mb"] <= 40, "ready_2s": ready < 2.0}
    return r


def _table(rows: list[dict], floor: dict) -> None:
    pipeline = [("model", 14, "s"), ("pipe_bare_ms", 14, ".3f"), ("pipe_inproc_ms", 16, ".3f"),
                ("pipe_daemon_ms", 16, ".3f"), ("pipe_overhead", 15, ".1%"), ("pipe_vs_bare", 14, ".1%"),
                ("pipe_inproc_cpu_ms", 20, ".3f"), ("pipe_daemon_cpu_ms", 20, ".3f"),
                ("pipe_cpu_overhead", 19, ".1%")]
    print("\nsource -> sink (folder -> model -> JSONL), ms per input (wall, and CPU of all the side's "
          "processes); overhead = daemon / inproc - 1")
    print("".join(f"{c:>{w}}" for c, w, _ in pipeline))
    for r in rows:
        print("".join(f"{r[c]:>{w}{f}}" for c, w, f in pipeline))
    if not floor:
        return
    print(f"\nfloor: pipe round trip {floor['pipe_us']:.1f} us (p95 {floor['pipe_p95_us']:.1f}); two thread "
          f"hand-offs {floor['hops_us']:.1f} us; daemon echo (no model) async {floor['echo_us']:.1f} us "
          f"(p95 {floor['echo_p95_us']:.1f}), sync {floor['echo_sync_us']:.1f} us (p95 {floor['echo_sync_p95_us']:.1f})")
    latency = [("model", 14, "s"), ("bare_ms", 9, ".3f"), ("sync_ms", 9, ".3f"), ("sync_overhead", 14, ".1%"),
               ("daemon_ms", 10, ".3f"), ("overhead", 9, ".1%"),
               ("overhead_ms", 12, ".3f"), ("bare_p95_ms", 12, ".3f"), ("daemon_p95_ms", 14, ".3f"),
               ("inline_ms", 10, ".3f"), ("inline_overhead", 16, ".1%"), ("ready_s", 8, ".2f"),
               ("ready_online_s", 15, ".2f")]
    volume = [("model", 14, "s"), ("bare_mb_inf_s", 14, ".0f"), ("daemon_mb_inf_s", 16, ".0f"),
              ("mb_ratio", 9, ".2f"), ("bare_w2_inf_s", 14, ".0f"), ("daemon_w2_inf_s", 16, ".0f"),
              ("w2_ratio", 9, ".2f"), ("daemon_mb2_inf_s", 17, ".0f"), ("mb2_ratio", 10, ".2f"),
              ("bare_rss_mb", 12, ".1f"), ("daemon_rss_mb", 14, ".1f"),
              ("rss_delta_mb", 13, ".1f")]
    for cols in (latency, volume):
        print("".join(f"{c:>{w}}" for c, w, _ in cols))
        for r in rows:
            print("".join(f"{r[c]:>{w}{f}}" if r[c] is not None else f"{'-':>{w}}" for c, w, f in cols))


if __name__ == "__main__":
    main()
