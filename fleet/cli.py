"""``ganglion fleet``: the hub, its clients and the simulator.

    ganglion fleet serve --broker URL [--db fleet.sqlite] [--signing-key HUB.key] [--operator-key OPS.pub]
                         [--http [HOST:]PORT] [--operator-token-file F]
    ganglion fleet deploy ARTIFACT.gpk|BUNDLE.fw --to all|tag:K=V|DEVICE... [--waves 1,10,50,100] [--max-failures 5%]
                                       [--concurrency N] [--shadow N] [--json]
    ganglion fleet status [ID] [--all] [--json]       pause|resume|abort|rollback [ID]
    ganglion fleet devices [--tag K=V] [--version V] [--online/--offline] [--json]
    ganglion fleet device ID [--json]                 registry row, health, events, deployment history
    ganglion fleet simulate --broker URL --devices N [--prefix sim] [--fail-rate R] [--latency-ms M]

Clients reach the hub through the broker (fleet/control.py): no port besides the broker's.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import click

from core import keys
from core.errors import UsageError
from core.vocab import broker_tls, json_flag, mqtt_version, signing_key, trusted_keys
from edge.telemetry.cli import broker_option
from edge.telemetry.config import check_device_id
from fleet.control import HubClient
from fleet.deployments import check_options
from fleet.hub import Hub
from fleet.plan import Limits
from fleet.sim import FAIL_MODES, Simulator


def _keys(paths):
    if not paths:
        return None
    return keys.load_publics(list(paths))


def _private(path):
    if path is None:
        return None
    return keys.load_private(path)


def _connection(ca_file, cert_file, key_file, username, password, mqtt_version) -> dict:
    return {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file, "username": username,
            "password": password, "mqtt_version": mqtt_version}


@click.group()
def fleet():
    """Run the fleet hub, roll out artifacts in waves, simulate devices."""


@fleet.command()
@broker_option
@broker_tls
@mqtt_version()
@click.option("--db", default="fleet.sqlite", show_default=True, help="The hub's SQLite database.")
@signing_key("The hub's command key: every command it sends to devices is signed with it.")
@click.option("--operator-key", "operator_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Only commands signed by one of these keys reach the hub (repeatable).")
@trusted_keys("Refuse artifacts not signed by one of these keys (repeatable).")
@trusted_keys("Verify .fw bundles at upload against these keys (repeatable; without: devices alone verify).",
              old=(), flag="--firmware-trusted-key", dest="firmware_key")
@click.option("--verify-timeout", type=float, default=120.0, show_default=True,
              help="Seconds a device has to report the new version running and healthy.")
@click.option("--latency-ratio", type=float, default=1.5, show_default=True,
              help="New p95 latency may be this many times the previous one.")
@click.option("--shadow-agreement", type=float, default=0.99, show_default=True,
              help="Top-1 agreement a --shadow run must reach.")
@click.option("--http", metavar="[HOST:]PORT", help="Serve the web dashboard here (host 127.0.0.1 by default).")
@click.option("--operator-token-file", type=click.Path(exists=True, dir_okay=False),
              help="The dashboard's operator token (pause/resume/abort); without it one is generated and printed.")
def serve(broker, ca_file, cert_file, key_file, username, password, mqtt_version, db, signing_key, operator_keys,
          trusted_key, firmware_key, verify_timeout, latency_ratio, shadow_agreement, http, operator_token_file):
    """Run the hub: registry, deployments and rollouts, until SIGTERM/Ctrl-C.

    \b
    Examples:
      ganglion fleet serve --broker mqtt://127.0.0.1:1883 --db fleet.sqlite
      ganglion fleet serve --broker mqtts://broker:8883 --ca-file ca.pem --signing-key hub.key --operator-key ops.pub
      ganglion fleet serve --broker mqtt://127.0.0.1:1883 --http 8080 --operator-token-file ops.token
    """

    web = _web(http, operator_token_file) if http else None     # bad --http/token: before the db is opened
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    limits = Limits(verify_timeout_s=verify_timeout, latency_ratio=latency_ratio, shadow_agreement=shadow_agreement)
    hub = Hub(list(broker), db, key=_private(signing_key), operator_keys=_keys(operator_keys),
              trusted_keys=_keys(trusted_key), firmware_keys=_keys(firmware_key), limits=limits,
              **_connection(ca_file, cert_file, key_file, username, password, mqtt_version))
    dashboard = _dashboard(web, hub, http, operator_token_file) if http else None
    signal.signal(signal.SIGTERM, lambda *_: hub.stop())
    hub.start()
    click.echo(f"fleet hub on {', '.join(broker)}, database {db} ({len(hub.registry.devices)} devices known)",
               err=True)
    if dashboard:
        dashboard.start()
        click.echo(f"dashboard on {dashboard.url}", err=True)
    try:
        hub.run()
    except KeyboardInterrupt:
        pass
    finally:
        if dashboard:
            dashboard.stop()
        hub.close()


def _web(address: str, token_file: str | None):
    try:
        from fleet.web import auth, server      # optional: the dashboard needs the "fleet" extra (starlette, uvicorn)
    except ImportError as exc:
        raise UsageError(f"--http needs the dashboard's packages: {exc}", code="usage.http",
                         hint="pip install 'ganglion[fleet]'") from None
    server.parse_address(address)
    if token_file:
        auth.validate(Path(token_file).read_text().strip())
    return server


def _dashboard(web, hub, address: str, token_file: str | None):
    from fleet.web import auth       # optional: the "fleet" extra (_web checked it is installed)
    dashboard = web.Dashboard(hub, address)
    if token_file:
        auth.install(hub.store, Path(token_file).read_text().strip())
    elif (token := auth.ensure(hub.store)) is not None:
        click.echo(f"dashboard operator token (shown once, stored hashed): {token}", err=True)
    return dashboard


def client_options(fn):
    for deco in reversed([broker_option, broker_tls, mqtt_version(),
                          signing_key("Sign hub commands (needed when the hub has --operator-key)."),
                          click.option("--timeout", type=float, default=30.0, show_default=True,
                                       help="Seconds to wait for the hub.")]):
        fn = deco(fn)
    return fn


def _hub(broker, ca_file, cert_file, key_file, username, password, mqtt_version, signing_key, timeout):
    return HubClient(list(broker), key=_private(signing_key), timeout=timeout, connect_timeout=timeout,
                     **_connection(ca_file, cert_file, key_file, username, password, mqtt_version))


def parse_targets(values: tuple[str, ...]):
    if not values or values == ("all",):
        return "all"
    if len(values) == 1 and values[0].startswith("tag:"):
        if "=" not in values[0]:
            raise UsageError(f"--to {values[0]}: a tag target is tag:KEY=VALUE", code="usage.deploy")
        return values[0]
    return [check_device_id(v, "--to") for v in values]


def parse_waves(text: str) -> list[float]:
    try:
        waves = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--waves {text!r}: comma-separated percentages, e.g. 1,10,50,100",
                         code="usage.deploy") from None
    return waves


def parse_fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise UsageError(f"--max-failures {text!r}: a percentage (5%) or a fraction (0.05)", code="usage.deploy")
    return value


@fleet.command()
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "to", multiple=True, help="all (default), tag:KEY=VALUE, or device ids (repeatable).")
@click.option("--waves", default="1,10,50,100", show_default=True, help="Cumulative percentages of the target set.")
@click.option("--max-failures", default="5%", show_default=True, help="Halt past this share of failed devices.")
@click.option("--concurrency", type=int, default=20, show_default=True, help="Transfers in flight at once.")
@click.option("--shadow", type=int, default=0, help="Canary: run the candidate beside the current model on N inputs.")
@json_flag('Print {"id": ...} as JSON.')
@client_options
def deploy(artifact, to, waves, max_failures, concurrency, shadow, as_json, broker, ca_file, cert_file, key_file,
           username, password, mqtt_version, signing_key, timeout):
    """Start a staged rollout of ARTIFACT (a model .gpk or a firmware .fw bundle); prints the deployment id.

    \b
    Examples:
      ganglion fleet deploy model-2.gpk --to all --waves 1,10,50,100 --max-failures 5%
      ganglion fleet deploy model-2.gpk --to tag:site=lab --shadow 32 --json
      ganglion fleet deploy model-2.gpk --to cam1 --to cam2 --waves 100
      ganglion fleet deploy app-2.0.0.fw --to tag:board=rpi4 --waves 5,50,100
    """
    options = {"to": parse_targets(to), "waves": parse_waves(waves), "max_failures": parse_fraction(max_failures),
               "concurrency": concurrency, "shadow": shadow}
    check_options(options)                      # the hub checks again; fail here before uploading
    with _hub(broker, ca_file, cert_file, key_file, username, password, mqtt_version, signing_key, timeout) as hub:
        result = hub.deploy(artifact, options)
    click.echo(json.dumps(result) if as_json else result["id"])


@fleet.command()
@click.argument("deployment", required=False)
@click.option("--all", "list_all", is_flag=True, help="List every deployment.")
@json_flag()
@client_options
def status(deployment, list_all, as_json, broker, ca_file, cert_file, key_file, username, password, mqtt_version,
           signing_key, timeout):
    """A deployment's state, per wave and per device (default: the newest).

    \b
    Examples:
      ganglion fleet status
      ganglion fleet status d20261206-131500-ead002 --json
      ganglion fleet status --all
    """
    with _hub(broker, ca_file, cert_file, key_file, username, password, mqtt_version, signing_key, timeout) as hub:
        result = hub.call("status", {"list": True} if list_all else {"id": deployment})
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif list_all:
        for dep in result:
            click.echo(f"{dep['id']}  {dep['state']:<8} wave {dep['wave']}  {dep['name']} {dep['version']}")
    else:
        click.echo(render_status(result))


def render_status(dep: dict) -> str:
    lines = [f"{dep['id']}: {dep['state']}" + (f" ({dep['reason']})" if dep.get("reason") else ""),
             f"  {'bundle' if dep.get('kind') == 'firmware' else 'artifact'} {dep['name']} {dep['version']} "
             f"({dep['sha256'][:12]}), rollback: {dep['rollback']}"]
    for wave in dep["waves"]:
        states = ", ".join(f"{k} {v}" for k, v in sorted(wave["states"].items()))
        lines.append(f"  wave {wave['wave']} ({wave['percent']:g}%): {wave['devices']} devices"
                     f"{'' if wave['open'] else ' (not open)'}: {states}")
    for m in dep["devices"]:
        if m.get("error"):
            lines.append(f"  {m['device']}: {m['state']}: {m['error']}")
    return "\n".join(lines)


def _transition(verb: str):
    @fleet.command(name=verb, help=f"{verb.capitalize()} a deployment (default: the newest).\n\n\b\n"
                   f"Examples:\n  ganglion fleet {verb}\n  ganglion fleet {verb} DEPLOYMENT_ID --json")
    @click.argument("deployment", required=False)
    @json_flag()
    @client_options
    def command(deployment, as_json, broker, ca_file, cert_file, key_file, username, password, mqtt_version,
                signing_key, timeout):
        with _hub(broker, ca_file, cert_file, key_file, username, password, mqtt_version, signing_key, timeout) as hub:
            result = hub.call(verb, {"id": deployment})
        click.echo(json.dumps(result) if as_json else f"{result['id']}: {result['state']}")
    return command


for _verb in ("pause", "resume", "abort", "rollback"):
    _transition(_verb)


@fleet.command()
@click.option("--tag", help="Only devices with this tag (KEY=VALUE).")
@click.option("--version", help="Only devices running this model version.")
@click.option("--online/--offline", default=None, help="Only online / offline devices.")
@json_flag()
@client_options
def devices(tag, version, online, as_json, broker, ca_file, cert_file, key_file, username, password, mqtt_version,
            signing_key, timeout):
    """The hub's device registry.

    \b
    Examples:
      ganglion fleet devices --online
      ganglion fleet devices --tag site=lab --version 2.0 --json
    """
    with _hub(broker, ca_file, cert_file, key_file, username, password, mqtt_version, signing_key, timeout) as hub:
        rows = hub.call("devices", {"tag": tag, "version": version, "online": online})["devices"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        h = row["health"]
        click.echo(f"{row['id']:<24} {'online' if row['online'] else 'offline':<8} {row['model']} "
                   f"{row['model_version']}  p95 {h.get('p95_ms')} ms  err {h.get('error_rate')}")


@fleet.command()
@click.argument("device_id")
@json_flag()
@client_options
def device(device_id, as_json, broker, ca_file, cert_file, key_file, username, password, mqtt_version, signing_key,
           timeout):
    """One device: registry row, health, recent events and its deployment history.

    \b
    Examples:
      ganglion fleet device cam1
      ganglion fleet device cam1 --json
    """
    with _hub(broker, ca_file, cert_file, key_file, username, password, mqtt_version, signing_key, timeout) as hub:
        row = hub.call("device", {"id": check_device_id(device_id, "DEVICE")})
    if as_json:
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"{row['id']}: {'online' if row['online'] else 'offline'}, {row['model']} {row['model_version']} "
               f"({str(row['model_sha256'])[:12]}), tags {row['tags']}, health {row['health']}")
    for h in row["history"]:
        error = h["detail"].get("error")
        click.echo(f"  {h['ts']:.0f} {h['deployment']} {h['action']}" + (f": {error}" if error else ""))


@fleet.command()
@broker_option
@broker_tls
@mqtt_version()
@click.option("--devices", "count", type=int, required=True, help="How many devices.")
@click.option("--prefix", default="sim", show_default=True, help="Device ids are PREFIX-0001, ...")
@click.option("--fail-rate", type=float, default=0.0, show_default=True, help="Share of devices that fail deploys.")
@click.option("--fail-mode", type=click.Choice(list(FAIL_MODES)), default="load", show_default=True,
              help="How a failing device fails: refuses the model, serves errors, disagrees in a shadow run, "
                   "or reverts a new firmware slot.")
@click.option("--latency-ms", type=float, default=5.0, show_default=True, help="Simulated p50 latency.")
@click.option("--metrics-interval", type=float, default=2.0, show_default=True, help="Seconds between metrics.")
@click.option("--per-connection", type=int, default=100, show_default=True, help="Devices per MQTT connection.")
@click.option("--workdir", default="sim-devices", show_default=True, help="Where devices keep transfers.")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE tag every device reports (repeatable).")
@click.option("--command-key", "command_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Devices obey only commands signed by one of these keys (repeatable).")
@trusted_keys("Devices refuse artifacts not signed by one of these keys (repeatable).")
@trusted_keys("Devices install firmware bundles signed by one of these keys (repeatable; none: OTA refused).",
              old=(), flag="--firmware-trusted-key", dest="firmware_key")
def simulate(broker, ca_file, cert_file, key_file, username, password, mqtt_version, count, prefix, fail_rate,
             fail_mode, latency_ms, metrics_interval, per_connection, workdir, tags, command_keys, trusted_key,
             firmware_key):
    """Run N simulated devices in this process until SIGTERM/Ctrl-C.

    \b
    Examples:
      ganglion fleet simulate --broker mqtt://127.0.0.1:1883 --devices 1000
      ganglion fleet simulate --devices 50 --prefix lab --fail-rate 0.1 --fail-mode unhealthy --tag site=lab
    """

    bad = [t for t in tags if "=" not in t]
    if bad:
        raise UsageError(f"--tag {bad[0]!r}: expected KEY=VALUE", code="usage.simulate")
    sim = Simulator(list(broker), count, prefix=prefix, fail_rate=fail_rate, fail_mode=fail_mode,
                    latency_ms=latency_ms, metrics_interval=metrics_interval, per_connection=per_connection,
                    workdir=workdir,
                    tags=dict(t.split("=", 1) for t in tags), command_keys=_keys(command_keys),
                    artifact_keys=_keys(trusted_key), firmware_keys=_keys(firmware_key),
                    **_connection(ca_file, cert_file, key_file, username, password, mqtt_version))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sim.start()
    click.echo(f"simulating {count} devices ({prefix}-...) on {', '.join(broker)} "
               f"over {len(sim.connections)} connection(s)",
               err=True)
    sys.stderr.flush()
    try:
        while not stop:
            sim.stopping.wait(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
