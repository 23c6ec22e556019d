"""``ganglion telemetry``: watch a fleet, send commands and files to a device.

    ganglion telemetry watch --broker mqtt://HOST:PORT [--json] [--once | --duration S] [--device ID ...]
    (every command: --mqtt-version auto|5|3.1.1; auto falls back to 3.1.1 on brokers without MQTT 5)
    ganglion telemetry send DEVICE VERB [--args JSON] [--signing-key KEY] [--id ID] [--timeout S]
    ganglion telemetry send-file DEVICE VERB FILE [--args JSON] [--signing-key KEY] [--chunk-size N]
    ganglion telemetry acl --device ID ... --out DIR   (mosquitto password file + per-device ACL)

The broker comes from ``--broker`` or ``$GANGLION_BROKER``; TLS with ``mqtts://`` and
``--ca-file/--cert-file/--key-file``; commands are signed with ``--signing-key`` (core/vocab.py). ``send`` prints the device's reply as JSON and exits 6 when the
device refused or failed the command.
"""
from __future__ import annotations

import json
import sys
import time

import click

from core import keys
from core.errors import UsageError
from core.vocab import broker_tls, json_flag, mqtt_version, signing_key
from edge.telemetry import acl as aclmod
from edge.telemetry.config import broker_urls, check_device_id
from edge.telemetry.mqtt import MqttClient
from edge.telemetry.requester import Requester, check_reply
from edge.telemetry.signing import find_command_key
from edge.telemetry.watch import SUBSCRIPTIONS, Fleet, render_table

broker_option = click.option(
    "--broker", "broker", multiple=True, envvar="GANGLION_BROKER", default=("mqtt://127.0.0.1:1883",),
    show_default=True, help="mqtt://HOST:PORT or mqtts://HOST:PORT ($GANGLION_BROKER, space-separated). "
                            "Repeat for a failover list, in order of preference.")


def _device_ids(ctx, param, value):
    """Click callback: DEVICE / --device pass the device id rule before any broker is contacted."""
    where = "DEVICE" if param.name == "device" else "--device"
    if isinstance(value, tuple):
        return tuple(check_device_id(v, where) for v in value)
    return check_device_id(value, where)


@click.group()
def telemetry():
    """Watch devices and send them commands over MQTT."""


@telemetry.command()
@broker_option
@broker_tls
@mqtt_version()
@json_flag("JSON instead of a table (one line per refresh).")
@click.option("--once", is_flag=True, help="Collect for --wait seconds, print once, exit.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--wait", type=float, default=1.5, show_default=True, help="With --once: seconds to listen.")
@click.option("--device", "devices", multiple=True, callback=_device_ids, help="Only these devices (repeatable).")
def watch(broker, ca_file, cert_file, key_file, username, password, mqtt_version, as_json, once, duration, interval, wait,
          devices):
    """A live table of devices: online, model and version, p95 latency, throughput, errors, last seen.

    \b
    Examples:
      ganglion telemetry watch --broker mqtt://127.0.0.1:1883
      ganglion telemetry watch --once --json --device cam1
      ganglion telemetry watch --broker mqtts://broker:8883 --ca-file ca.pem
    """

    if interval <= 0 or (duration is not None and duration <= 0):
        raise UsageError("--interval and --duration must be positive", code="usage.watch")
    fleet = Fleet(devices)
    client = MqttClient(broker_urls(broker), client_id=f"ganglion-watch-{time.time_ns() % 10**9}",
                        ca_file=ca_file, cert_file=cert_file, key_file=key_file, username=username,
                        password=password, mqtt_version=mqtt_version)
    for topic in SUBSCRIPTIONS:
        # QoS 0: a live view needs no JetStream consumer on NATS, so it cannot take a record from
        # another consumer's (the fleet hub's) the way bench/nats_inputs_bench.py
        # shows for inputs, and it is granted while JetStream re-forms after a node loss
        client.subscribe(topic, fleet.on_message, qos=0)
    client.connect()
    live = not once and not as_json and sys.stdout.isatty()
    try:
        if once:
            time.sleep(wait)        # retained statuses arrive at once; metrics within their period
            _show(fleet, as_json, False, render_table)
            return
        end = time.monotonic() + (duration if duration is not None else float("inf"))
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(interval, left))
            _show(fleet, as_json, live, render_table)
    except KeyboardInterrupt:
        pass
    finally:
        client.stop()


def _show(fleet, as_json: bool, live: bool, render_table) -> None:
    rows = fleet.snapshot()
    if as_json:
        click.echo(json.dumps(rows, sort_keys=True))
        return
    if live:
        click.clear()
    click.echo(render_table(rows))
    if not live:
        click.echo("")


def _parse_args(text: str | None) -> dict:
    if not text:
        return {}
    try:
        args = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--args is not JSON: {exc}", where="--args", code="usage.args") from None
    if not isinstance(args, dict):
        raise UsageError("--args must be a JSON object", where="--args", code="usage.args",
                         hint="""e.g. --args '{"key": "value"}'""")
    return args


def _load_key(path):
    """The key every command is signed with: --signing-key, $GANGLION_COMMAND_KEY or the default
    file (signing.find_command_key); None sends unsigned commands."""
    path = find_command_key(path)
    if path is None:
        return None
    return keys.load_private(path)


def _requester(broker, ca_file, cert_file, key_file, username, password, mqtt_version, timeout):
    return Requester(broker_urls(broker), ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                     username=username, password=password, connect_timeout=timeout, mqtt_version=mqtt_version)


@telemetry.command()
@click.argument("device", callback=_device_ids)
@click.argument("verb")
@broker_option
@broker_tls
@mqtt_version()
@click.option("--args", "args_json", help="Command arguments as a JSON object.")
@signing_key("ed25519 private key that signs the command (default: $GANGLION_COMMAND_KEY, else "
             "~/.config/ganglion/command.key when it exists).")
@click.option("--id", "command_id", help="Command id (default: random). Re-using an id replays the reply.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the broker, and for the reply (retries included).")
def send(device, verb, broker, ca_file, cert_file, key_file, username, password, mqtt_version, args_json,
         signing_key, command_id, timeout):
    """Send VERB to DEVICE and print its reply as JSON (exit 6 if the device refused or failed it).

    \b
    Verbs a ganglion run device answers:
      ping, status                       liveness; status document + telemetry counters
      config.get  {"key": "batch.max_batch"}   one value, or the whole config without "key"
      config.set  {"key": ..., "value": ...}   batch.* / metrics.* at once, others on reload
      reload      {"model": PATH}        load the model (or another one) into fresh workers
      deploy, deploy-firmware            files: use `ganglion telemetry send-file`
    \b
    Examples:
      ganglion telemetry send cam1 ping
      ganglion telemetry send cam1 config.set --args '{"key": "batch.max_batch", "value": 4}'
      ganglion telemetry send cam1 reload --signing-key ops.key --timeout 30
    """
    args, private = _parse_args(args_json), _load_key(signing_key)
    with _requester(broker, ca_file, cert_file, key_file, username, password, mqtt_version, timeout) as req:
        # the same id again every ~10 s: a command lost while a broker cluster re-forms is re-sent,
        # and the device runs it once (commands.py: idempotency)
        reply = req.call(device, verb, args, key=private, command_id=command_id, timeout=timeout,
                         retries=max(1, int(timeout // 10)))
    _finish(reply)


@telemetry.command("send-file")
@click.argument("device", callback=_device_ids)
@click.argument("verb")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@broker_option
@broker_tls
@mqtt_version()
@click.option("--args", "args_json", help="Arguments for the final commit, as a JSON object.")
@signing_key("ed25519 private key that signs every chunk command (default: as for send).")
@click.option("--chunk-size", type=click.IntRange(1024, 1 << 20), default=64 * 1024, show_default=True,
              help="Bytes per chunk.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait per chunk.")
def send_file(device, verb, file, broker, ca_file, cert_file, key_file, username, password, mqtt_version,
              args_json, signing_key, chunk_size, timeout):
    """Send FILE to DEVICE in chunks (VERB.begin/.chunk/.commit); resumes what the device already has.

    \b
    Examples:
      ganglion telemetry send-file cam1 deploy digits-v2.gpk            # a new model, verified, reloaded
      ganglion telemetry send-file cam1 deploy-firmware app.fw          # OTA: install, validate or revert
    """
    args, private = _parse_args(args_json), _load_key(signing_key)
    with _requester(broker, ca_file, cert_file, key_file, username, password, mqtt_version, timeout) as req:
        with click.progressbar(length=1, label=f"sending {file}", file=sys.stderr) as bar:
            def progress(done, total):
                bar.length = total
                bar.update(done - bar.pos)
            reply = req.send_file(device, verb, file, args=args, key=private, chunk_size=chunk_size,
                                  timeout=timeout, progress=progress)
    _finish(reply)


def _finish(reply: dict) -> None:
    click.echo(json.dumps(reply, indent=2, sort_keys=True))
    check_reply(reply, "the device refused the command")


@telemetry.command()
@click.option("--device", "devices", multiple=True, help="A device id (repeatable); its account name is the id.")
@click.option("--devices-file", type=click.Path(exists=True, dir_okay=False),
              help="More device ids, one per line ('#' starts a comment).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for passwd, acl, mosquitto.conf and credentials.json.")
@click.option("--operator", default="ganglion-operator", show_default=True, help="Account of the tools.")
@click.option("--hub", default="ganglion-hub", show_default=True, help="Account of the fleet hub ('' for none).")
@click.option("--listener", help="Add 'listener PORT [ADDRESS]' to mosquitto.conf (e.g. '1883 0.0.0.0').")
@click.option("--rotate", is_flag=True, help="New passwords for everybody (default: keep the ones in --out).")
def acl(devices, devices_file, out, operator, hub, listener, rotate):
    """Write a mosquitto password file + ACL: each device publishes only under its own id and reads
    only its own commands; an operator account for the tools and a hub account for the fleet.

    \b
    Examples:
      ganglion telemetry acl --device cam1 --device cam2 --out /etc/mosquitto/ganglion
      ganglion telemetry acl --devices-file fleet.txt --out acl/ --listener "1883 0.0.0.0"
    Then add 'include_dir /etc/mosquitto/ganglion' (or its mosquitto.conf lines) to the broker's
    config, and give each device its password from credentials.json ([telemetry] username/password).
    """
    names = list(devices)
    if devices_file:
        lines = (line.split("#", 1)[0].strip() for line in open(devices_file, encoding="utf-8"))
        names += [line for line in lines if line]
    known = {} if rotate else aclmod.read_known(out)
    accounts = aclmod.accounts(names, operator=operator, hub=hub or None, known=known)
    for path in aclmod.write(out, accounts, listener=listener):
        click.echo(str(path))
    kept = sum(1 for user in accounts.users() if user in known)
    click.echo(f"{len(accounts.devices)} device account(s), {kept} password(s) kept; "
               f"plain passwords in {out}/credentials.json (mode 0600)", err=True)
