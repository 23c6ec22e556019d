"""``ganglion fleet simulate``: N protocol-true devices in one process, for tests and benches.

Each simulated device speaks the daemon's protocol through the project's own code: topics and
envelopes (edge/telemetry/topics.py), a per-device ``seq``, the command checks, signatures and
idempotency (edge/telemetry/commands.py ``CommandRouter``), chunked transfers
(edge/telemetry/transfer.py) and artifact verification (edge/artifact.py). Only the model is a
stub: ``deploy.commit`` verifies the artifact and "loads" it by taking its name, version and sha256;
metrics are drawn around ``--latency-ms``.

Scale: devices share a few MQTT connections (``per_connection``, default 100: 1,000 devices are
10 paho threads, not 1,000) and one thread pool for command handlers; a connection that carries a
single device sets that device's Last Will, so a SIGKILLed one-device simulator goes offline like
a real daemon. What is not simulated: the disk spool (records are published directly; ``seq``
restarts at 1 with the process), inference results, real firmware slots.

Firmware (``deploy-firmware.*``, firmware/ota.py's transfer): the bundle is verified as a device
does (``firmware.verify.verify`` against ``firmware_keys``; none = refused, like a daemon whose
OTA is disabled), the reply is the daemon's ``{"outcome": "installed", "restart": true}``, and
``FIRMWARE_BOOT_S`` later the "restarted" device reports ``{"event": "firmware", "phase":
"validated"}`` and the version in its status -- or, with ``fail_mode`` ``revert``, ``reverted``
(its old version stays, and like a daemon it refuses that version from then on).

Failures (``fail_rate``, chosen per device by a hash of its id, so a rerun fails the same ones):
``load``: every deploy of a new artifact is refused like a model that does not load;
``unhealthy``: it loads, then half the inputs fail; ``disagree``: it loads, but a shadow run
(``args.shadow``) reports low top-1 agreement; ``revert``: a new firmware slot fails validation.
Rolling back (``reload`` to the previous model) always works.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core import artifact as gpk
from core.errors import GanglionError, InputError, UsageError
from firmware.errors import InstallError
from firmware.ota import VERB as FIRMWARE_VERB
from firmware.verify import verify as verify_bundle
from edge.telemetry.commands import CommandLog, CommandRouter
from edge.telemetry.config import broker_urls, check_device_id
from edge.telemetry.mqtt import MqttClient, Will
from edge.telemetry.topics import command_filter, default_reply_topic, device_topic, envelope
from edge.telemetry.transfer import TransferReceiver

log = logging.getLogger("ganglion.fleet.sim")
FAIL_MODES = ("load", "unhealthy", "disagree", "revert")
FIRMWARE_BOOT_S = 0.5       # from the OTA reply to the "restarted" device's slot verdict
BASE_FIRMWARE = "1.0.0"
BASE = {"model": "sim", "model_version": "1.0", "model_sha256": hashlib.sha256(b"ganglion-sim-base").hexdigest()}


def fails(device_id: str, rate: float) -> bool:
    """Deterministic per device (salted: the hub orders devices by their plain sha256)."""
    value = int(hashlib.sha256(b"sim-fail:" + device_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return value < rate


class SeqBook:
    """Per-device ``seq`` that never repeats across simulator restarts, even after SIGKILL (what the
    daemon's spool guarantees): blocks of ``RESERVE`` numbers are claimed in a JSON file before
    they are used, so a restart skips the rest of a block -- a gap, never a repeat."""

    RESERVE = 1000

    def __init__(self, path: Path, devices: list[str]):
        self.path, self._lock = path, threading.Lock()
        try:
            claimed = json.loads(path.read_text())
        except (OSError, ValueError):
            claimed = {}
        self.next = {d: int(claimed.get(d, 0)) for d in devices}
        self.claimed = {d: n + self.RESERVE for d, n in self.next.items()}
        self._save()

    def take(self, device: str) -> int:
        with self._lock:
            self.next[device] += 1
            if self.next[device] > self.claimed[device]:
                self.claimed[device] = self.next[device] + self.RESERVE
                self._save()
            return self.next[device]

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        gpk.atomic_write(self.path, json.dumps(self.claimed).encode())


class SimDevice:
    def __init__(self, device_id: str, sim: "Simulator"):
        self.id, self.sim = device_id, sim
        self.failing = fails(device_id, sim.fail_rate)
        base_path = str(sim.workdir / device_id / "base.gpk")
        self.model = {**BASE, "model_path": base_path}
        self.known = {base_path: dict(self.model)}          # model paths this device can reload
        self.firmware, self.failed_firmware = BASE_FIRMWARE, set()
        self.conn: MqttClient | None = None
        self.router = CommandRouter(device_id, reply=self._reply, event=lambda ev: self.record("events", ev),
                                    log_db=CommandLog(":memory:"), trusted_keys=sim.command_keys)
        self.router.register("ping", lambda args: {"pong": True})
        self.router.register("reload", self.reload)
        receiver = TransferReceiver(sim.workdir / device_id / "transfers", max_bytes=64 << 20)
        receiver.install(self.router.register, "deploy", self.deploy)
        receiver.install(self.router.register, FIRMWARE_VERB, self.deploy_firmware)

    @property
    def unhealthy(self) -> bool:
        return self.failing and self.sim.fail_mode == "unhealthy" and self.model["model_sha256"] != BASE["model_sha256"]

    # -- records ------------------------------------------------------------------------------
    def status_payload(self, state: str = "online", **extra) -> bytes:
        data = {"state": state, "since": self.sim.since, **self.model, "board": "sim", "tags": self.sim.tags,
                "firmware_version": self.firmware,
                "restarts": 0, **extra}
        return envelope(None, time.time(), self.id, "status", data)

    def publish_status(self) -> None:
        self.conn.publish(device_topic(self.id, "status"), self.status_payload(), retain=True)

    def record(self, kind: str, data: dict) -> None:
        seq = self.sim.seqs.take(self.id)
        self.conn.publish(device_topic(self.id, kind), envelope(seq, time.time(), self.id, kind, data))

    def metrics(self, interval: float, rng: random.Random) -> dict:
        lat = self.sim.latency_ms
        n = max(1, int(self.sim.rate_hz * interval))
        errors = n // 2 if self.unhealthy else 0
        return {"model": self.model["model"], "model_version": self.model["model_version"], "window_s": interval,
                "throughput": round(n / interval, 3), "results": n - errors, "errors": errors,
                "latency_p50_ms": round(lat * rng.uniform(0.9, 1.0), 3),
                "latency_p95_ms": round(lat * rng.uniform(1.1, 1.2), 3), "total_restarts": 0,
                "cpu_percent": round(rng.uniform(5, 30), 1), "rss_mb": 60.0, "temperature_c": round(rng.uniform(40, 60), 1)}

    def _reply(self, topic: str | None, payload: bytes, correlation: bytes | None) -> None:
        self.conn.publish(topic or default_reply_topic(self.id), payload, correlation=correlation)

    # -- commands (the daemon's deploy and reload, with a stub model) --------------------------------
    def deploy(self, path: Path, info: dict, args: dict) -> dict:
        art = gpk.read(str(path), trusted_keys=self.sim.artifact_keys)       # hashes, signature
        digest = info["sha256"]
        if self.failing and self.sim.fail_mode == "load":
            self.record("events", {"event": "crash", "reason": "simulated: the model did not load"})
            raise InputError("the reloaded model did not become ready (simulated failure)", code="runtime.reload")
        target = str(self.sim.workdir / self.id / "deployed" / f"{art.manifest.get('name', 'model')}-{digest[:12]}.gpk")
        new = {"model": art.manifest.get("name", "model"), "model_version": str(art.manifest.get("version")),
               "model_sha256": digest, "model_path": target}
        previous = self.model["model_path"]
        result = {"reloaded": True, "model": target, "deployed": target, "sha256": digest, "previous": previous}
        shadow = args.get("shadow") or 0
        if isinstance(shadow, int) and shadow > 0:
            result["shadow"] = self.shadow_report(shadow)
            if result["shadow"]["top1_agreement"] < args.get("min_agreement", 0.0):
                self.known[target] = new               # stored, not switched to (as the daemon does)
                return {"switched": False, "deployed": target, "sha256": digest, "previous": previous,
                        "shadow": result["shadow"]}
        self.known[target] = new
        self._switch(new)
        self.record("events", {"event": "deploy", "model": target, "previous": previous, "sha256": digest})
        return result

    def deploy_firmware(self, path: Path, info: dict, args: dict) -> dict:
        """The daemon's OTA with a stub slot: verify, "install", reply, and "restart" into it."""
        version = verify_bundle(path, self.sim.firmware_keys).version
        if version in self.failed_firmware:           # firmware/ota.py: never an install/revert loop
            raise InstallError(f"version {version} already failed on this device; not retrying it",
                               code="firmware.failed_version")
        self.record("events", {"event": "firmware", "phase": "installed", "version": version, "slot": "b"})
        threading.Timer(FIRMWARE_BOOT_S, self._boot_firmware, (version,)).start()
        return {"outcome": "installed", "version": version, "slot": "b", "restart": True}

    def _boot_firmware(self, version: str) -> None:
        if self.failing and self.sim.fail_mode == "revert":
            self.failed_firmware.add(version)
            self.record("events", {"event": "firmware", "phase": "reverted", "version": version, "slot": "b",
                                   "failed_check": "selftest", "reason": "simulated: the new slot failed validation"})
        else:
            self.firmware = version
            self.record("events", {"event": "firmware", "phase": "validated", "version": version, "slot": "b"})
        self.publish_status()

    def shadow_report(self, n: int) -> dict:
        """What the daemon's shadow run reports; a 'disagree' device disagrees on 40% of inputs."""
        agree = 0.6 if self.failing and self.sim.fail_mode == "disagree" else 1.0
        return {"inputs": n, "top1_agreement": agree, "cosine": round(0.999 * agree, 4),
                "sqnr_db": 35.0 if agree == 1.0 else 3.0, "latency_ratio": 1.0}

    def reload(self, args: dict) -> dict:
        path = args.get("model") or self.model["model_path"]
        if path not in self.known:
            raise UsageError(f"no model at {path}", code="command.args")
        self._switch(self.known[path])
        self.record("events", {"event": "reload", "model": path})
        return {"reloaded": True, "model": path, "backend": "sim"}

    def _switch(self, model: dict) -> None:
        self.model = dict(model)
        self.publish_status()


class Simulator:
    def __init__(self, broker: str | Sequence[str], devices: int, *, prefix: str = "sim", fail_rate: float = 0.0,
                 fail_mode: str = "load", latency_ms: float = 5.0, rate_hz: float = 20.0, metrics_interval: float = 2.0,
                 per_connection: int = 100, workdir: str | Path = "sim-devices", tags: dict | None = None,
                 command_keys: list | None = None, artifact_keys: list | None = None,
                 firmware_keys: list | None = None, workers: int = 8,
                 mqtt_version: str = "auto", **connection):
        if devices < 1 or per_connection < 1 or not 0 <= fail_rate <= 1 or fail_mode not in FAIL_MODES:
            raise UsageError("--devices and --per-connection must be >= 1, --fail-rate in 0..1, "
                             f"--fail-mode one of {', '.join(FAIL_MODES)}", code="usage.simulate")
        self.url = broker_urls(broker)
        self.fail_rate, self.fail_mode, self.latency_ms, self.rate_hz = fail_rate, fail_mode, latency_ms, rate_hz
        self.metrics_interval, self.tags = metrics_interval, dict(tags or {})
        self.command_keys, self.artifact_keys, self.firmware_keys = command_keys, artifact_keys, firmware_keys
        self.workdir = Path(workdir)
        self.since = round(time.time(), 3)
        width = len(str(devices - 1))
        ids = [check_device_id(f"{prefix}-{i:0{width}d}") for i in range(devices)]
        self.seqs = SeqBook(self.workdir / f"{prefix}-seq.json", ids)
        self.devices = [SimDevice(device_id, self) for device_id in ids]
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-cmd")
        self.groups = [self.devices[i:i + per_connection] for i in range(0, devices, per_connection)]
        self.connections = [self._connection(group, index, prefix, mqtt_version, connection)
                            for index, group in enumerate(self.groups)]
        self.stopping = threading.Event()

    def _connection(self, group: list[SimDevice], index: int, prefix: str, mqtt_version: str, extra: dict):
        will = None
        if len(group) == 1:          # one device, one connection: its Last Will is the device's
            will = Will(device_topic(group[0].id, "status"), group[0].status_payload("offline", reason="lost"))
        conn = MqttClient(self.url, client_id=f"ganglion-sim-{prefix}-{index}", will=will, reconnect_min=0.2,
                          reconnect_max=2.0, mqtt_version=mqtt_version,
                          on_connect=lambda: [d.publish_status() for d in group], **extra)
        for device in group:
            device.conn = conn
            conn.subscribe(command_filter(device.id),
                           lambda message, device=device: self.pool.submit(device.router.handle, message))
        return conn

    def start(self, timeout: float = 30.0) -> "Simulator":
        for conn in self.connections:
            conn.connect(timeout)
        threading.Thread(target=self._metrics_loop, name="sim-metrics", daemon=True).start()
        return self

    def _metrics_loop(self) -> None:
        rng = random.Random(0)
        while not self.stopping.wait(self.metrics_interval):
            for device in self.devices:
                device.record("metrics", device.metrics(self.metrics_interval, rng))

    def stop(self) -> None:
        """Announce every device offline (retained), as a clean daemon stop does, and disconnect."""
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for device in self.devices:
            device.conn.publish(device_topic(device.id, "status"), device.status_payload("offline", reason="stopped"),
                                retain=True)
        for conn, group in zip(self.connections, self.groups):   # in-order PUBACKs: the last one covers the rest
            try:
                conn.publish_wait(device_topic(group[-1].id, "status"),
                                  group[-1].status_payload("offline", reason="stopped"), retain=True, timeout=5)
            except GanglionError as exc:
                log.warning("offline announcements may be lost: %s", exc.message)
            conn.stop()
