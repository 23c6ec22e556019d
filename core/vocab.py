"""One name per concept across every ``ganglion`` command (the table is in docs/cli.md).

    concept                         flag                          old names (hidden, still accepted)
    a key that must have signed     --trusted-key PUB (repeat)    --trust, --artifact-trust
      what this command reads
    firmware keys for `run`         --firmware-trusted-key PUB    --firmware-key
    the private key that signs      --signing-key KEY             --key
    broker TLS                      --ca-file, --cert-file,       --cert, --broker-ca, --broker-cert,
                                    --key-file                    --broker-key
    broker login                    --username, --password,       --broker-username, --broker-password,
                                    --password-file               --broker-password-file
    MQTT protocol version           --mqtt-version auto|5|3.1.1
    machine-readable output         --json

The decorators here declare those options once, so a command cannot drift to a new spelling.
An old name is a hidden option whose value is merged into the new one before the command runs.
"""
from __future__ import annotations

import functools
from pathlib import Path

import click

from core.config import MqttVersion, values

EXISTING_FILE = click.Path(exists=True, dir_okay=False)


def alias(new_dest: str, *old_flags: str, multiple: bool = False, **kw):
    """Keep ``old_flags`` working (hidden from --help) as another spelling of ``new_dest``."""
    alias_dest = f"alias_{new_dest}_{old_flags[0].strip('-').replace('-', '_')}"

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            old = kwargs.pop(alias_dest, None)
            if multiple and old:
                kwargs[new_dest] = tuple(kwargs.get(new_dest) or ()) + tuple(old)
            elif not multiple and old is not None and kwargs.get(new_dest) in (None, False):
                kwargs[new_dest] = old
            return fn(*args, **kwargs)
        return click.option(*old_flags, alias_dest, hidden=True, multiple=multiple, **kw)(wrapper)
    return deco


def required(dest: str, flag: str):
    """A required option that has aliases: click cannot see the merge, so check after it."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not kwargs.get(dest):
                raise click.UsageError(f"Missing option '{flag}'.")
            return fn(*args, **kwargs)
        return wrapper
    return deco


def trusted_keys(help: str, *, old: tuple[str, ...] = ("--trust",), is_required: bool = False,
                 flag: str = "--trusted-key", dest: str = "trusted_key"):
    """``--trusted-key PUB`` (repeatable): refuse what this command reads unless one of these signed it."""
    def deco(fn):
        if is_required:
            fn = required(dest, flag)(fn)
        for name in old:
            fn = alias(dest, name, multiple=True, type=EXISTING_FILE)(fn)
        return click.option(flag, dest, multiple=True, type=EXISTING_FILE, help=help)(fn)
    return deco


def signing_key(help: str, *, is_required: bool = False):
    """``--signing-key KEY``: the ed25519 private key that signs (``ganglion keys generate``)."""
    def deco(fn):
        if is_required:
            fn = required("signing_key", "--signing-key")(fn)
        fn = alias("signing_key", "--key", type=click.Path(exists=True, dir_okay=False))(fn)
        return click.option("--signing-key", "signing_key", type=click.Path(exists=True, dir_okay=False),
                            help=help)(fn)
    return deco


def broker_tls(fn, *, old_prefix: str | None = None):
    """``--ca-file --cert-file --key-file --username --password --password-file`` (mqtts:// and login)."""
    opts = [("--ca-file", "ca_file", "CA file to trust for mqtts:// (default: the system store).", EXISTING_FILE),
            ("--cert-file", "cert_file", "Client certificate for mqtts:// (with --key-file).", EXISTING_FILE),
            ("--key-file", "key_file", "The client certificate's private key.", EXISTING_FILE),
            ("--username", "username", "Broker user ($GANGLION_MQTT_USER).", None),
            ("--password", "password", "Broker password ($GANGLION_MQTT_PASSWORD).", None),
            ("--password-file", "password_file", "Read the broker password from this file (first line).",
             EXISTING_FILE)]
    olds = {"cert_file": ["--cert"]}
    if old_prefix:
        for new, dest, _, _ in opts:
            name = {"ca_file": "ca", "cert_file": "cert", "key_file": "key"}.get(dest, new.strip("-"))
            olds.setdefault(dest, []).append(f"--{old_prefix}-{name}")
    fn = _password_from_file(fn)
    for new, dest, help_text, kind in reversed(opts):
        for old in olds.get(dest, ()):
            fn = alias(dest, old, type=kind)(fn)
        env = {"username": "GANGLION_MQTT_USER", "password": "GANGLION_MQTT_PASSWORD"}.get(dest)
        fn = click.option(new, dest, type=kind, envvar=env, default=None, help=help_text)(fn)
    return fn


def mqtt_version(default: str | None = "auto"):
    """``--mqtt-version auto|5|3.1.1``: auto speaks MQTT 5 and falls back to 3.1.1 when the broker
    refuses it (edge/telemetry/mqtt.py). ``run`` passes ``default=None`` so its config file decides."""
    return click.option("--mqtt-version", "mqtt_version", type=click.Choice(values(MqttVersion)),
                        default=default, show_default=default is not None,
                        help="MQTT protocol: auto (MQTT 5, else 3.1.1 when the broker refuses it), 5 or 3.1.1.")


def _password_from_file(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        path = kwargs.pop("password_file", None)
        if path:
            lines = Path(path).read_text().splitlines()
            kwargs["password"] = lines[0] if lines else ""
        return fn(*args, **kwargs)
    return wrapper


def old_broker_tls(fn):
    """``broker_tls`` that also accepts the firmware commands' old ``--broker-*`` spellings."""
    return broker_tls(fn, old_prefix="broker")


def json_flag(help: str = "Print JSON instead of text."):
    return click.option("--json", "as_json", is_flag=True, help=help)
