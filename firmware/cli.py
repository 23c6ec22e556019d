"""``ganglion keys`` and ``ganglion firmware``: thin click wrappers over the verb modules.

Every command prints a readable summary, or JSON with ``--json``; errors are typed
(``firmware.errors``) and become one message and exit code 5 in ``edge.cli``.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import click

import boards
from core import keys as keymod
from core.vocab import json_flag, old_broker_tls, signing_key, trusted_keys
from firmware.boot import boot as do_boot
from firmware.build import build as do_build
from firmware.errors import HealthCheckError
from firmware.install import install as do_install
from firmware.revert import revert as do_revert
from firmware.rootboard import resolve
from firmware.slots import Layout
from firmware.status import render, status as do_status
from firmware.validate import render as render_report, validate as do_validate
from firmware.verify import inspect, verify


def _echo(data: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _layout(root: str, board: str | None) -> Layout:
    """The root's recorded layout; ``--board`` must agree with it (``firmware/rootboard.py``)."""
    if not board:
        return resolve(root)
    return resolve(root, boards.load(board))


root_option = click.option("--root", required=True, type=click.Path(file_okay=False),
                           help="Install root: / on a device, a folder in tests.")
board_option = click.option("--board", default=None,
                            help="Board whose [slots] layout the root uses; recorded by install, so later "
                                 "commands may leave it out (it must agree when given).")
json_option = json_flag()
trust_option = trusted_keys("Public key (.pub) the bundle must be signed by (repeatable).", is_required=True)


@click.group()
def keys():
    """Generate ed25519 signing keys."""


@keys.command("generate")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Private key path; the public key is written beside it as .pub.")
@json_option
def keys_generate(output, as_json):
    """Write a new key pair: OUTPUT (private, 0600) and OUTPUT.pub.

    \b
    Examples:
      ganglion keys generate -o signer.key     # --signing-key signer.key / --trusted-key signer.key.pub
      ganglion keys generate -o fw.key --json
    """
    private = Path(output)
    _, public = keymod.generate(private, private.with_name(private.name + ".pub"))
    _echo({"private": str(private), "public": str(public)}, as_json,
          f"private key: {private}\npublic key:  {public}")


@click.group()
def firmware():
    """Build, verify, install, validate and revert firmware bundles (.fw)."""


@firmware.command()
@click.option("--board", required=True, help="Board name (ganglion boards list) or a .toml path.")
@click.option("--artifact", required=True, type=click.Path(dir_okay=False, exists=True), help=".gpk artifact.")
@click.option("--config", required=True, type=click.Path(dir_okay=False, exists=True), help="Daemon TOML.")
@signing_key("ed25519 private key that signs the bundle (ganglion keys generate).", is_required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Bundle to write.")
@click.option("--wheelhouse", multiple=True, type=click.Path(file_okay=False, exists=True),
              help="Take wheels from this folder instead of pip download (repeatable).")
@click.option("--version", "version", default=None, help="Bundle version (PEP 440, e.g. 1.2.0 or 1.2.0rc1).")
@click.option("--cache", default=None, type=click.Path(file_okay=False),
              help="pip download cache (default ~/.cache/ganglion-wheels/BOARD).")
@trusted_keys("Public key (.pub) the artifact must be signed by (repeatable).", old=("--artifact-trust",))
@click.option("--no-self", is_flag=True,
              help="Do not pack Ganglion's own device code (edge, firmware, boards) as a wheel.")
@json_option
def build(board, artifact, config, signing_key, output, wheelhouse, version, cache, trusted_key, no_self, as_json):
    """Build a signed bundle for one board.

    \b
    Examples:
      ganglion firmware build --board rpi4 --artifact digits.gpk --config daemon.toml \\
          --signing-key fw.key --version 1.1.0 -o app.fw
      ganglion firmware build --board x86_64-generic --artifact m.gpk --config daemon.toml \\
          --signing-key fw.key --trusted-key signer.key.pub --wheelhouse ./wheels -o app.fw --json
    """
    manifest = do_build(board, artifact, config, signing_key, output, list(wheelhouse) or None, version=version,
                        cache=cache, artifact_trust=list(trusted_key) or None, include_self=not no_self,
                        progress=None if as_json else lambda m: click.echo(f"  {m}", err=True))
    size = Path(output).stat().st_size
    _echo({"bundle": str(output), "bytes": size, "manifest": manifest}, as_json,
          f"{output}: {manifest['board']} {manifest['version']}, {len(manifest['members'])} members "
          f"({len(manifest['wheels'])} wheels), {size / 1e6:.1f} MB, signed")


@firmware.command("inspect")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@trusted_keys("Also check the signature against this public key (repeatable).")
@json_option
def inspect_cmd(bundle, trusted_key, as_json):
    """Show a bundle's manifest and members (and whether a trusted key signed it).

    \b
    Examples:
      ganglion firmware inspect app.fw --trusted-key fw.key.pub
      ganglion firmware inspect app.fw --json
    """
    info = inspect(bundle, list(trusted_key) or None)
    m = info["manifest"]
    lines = [f"{bundle}: {m['board']} version {m['version']} ({m['architecture']}, python {m['python']}), "
             f"built {m['created']} by {m['builder']}",
             f"signed: {info['signed']}, verified: {info['verified']}"]
    lines += [f"  {e['size']:>12}  {e['sha256'][:16]}  {name}" for name, e in sorted(info["members"].items())]
    _echo(info, as_json, "\n".join(lines))


@firmware.command("verify")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@trust_option
@json_option
def verify_cmd(bundle, trusted_key, as_json):
    """Check signature, every member hash, names and types. Exit 0 only if all pass (else 5).

    \b
    Example:
      ganglion firmware verify app.fw --trusted-key fw.key.pub
    """
    manifest = verify(bundle, list(trusted_key))
    _echo({"ok": True, "bundle": str(bundle), "board": manifest.board, "version": manifest.version,
           "members": len(manifest.members)}, as_json,
          f"OK: {bundle} is {manifest.board} {manifest.version}, {len(manifest.members)} members verified")


@firmware.command()
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True))
@root_option
@trust_option
@click.option("--force", is_flag=True, help="Allow a downgrade, a reinstall or a failed version.")
@click.option("--max-boots", "max_boots", type=int, default=None,
              help="Starts the new slot gets to pass its health check before it is reverted (1..10; "
                   "default: the board's [slots] max_boots, else 3).")
@click.option("--cross", is_flag=True,
              help="The root is for another machine (an SD card, a sysroot): do not check the bundle's "
                   "architecture and Python against this one.")
@board_option
@json_option
def install(bundle, root, trusted_key, force, max_boots, cross, board, as_json):
    """Verify BUNDLE, write the inactive slot, switch to it (it boots unvalidated).

    \b
    Examples:
      ganglion firmware install app.fw --root / --trusted-key fw.key.pub
      ganglion firmware install app.fw --root ./sdcard --trusted-key fw.key.pub --board rpi4 --cross
    """
    bar, count = None, [0]

    def progress(step, detail=None):
        nonlocal bar
        if step == "verified":                   # the member count is known once the bundle is verified
            count[0] = detail
        elif step == "stage" and not as_json:    # policy passed: only now is a slot written
            bar = click.progressbar(length=count[0], label=f"verified; writing slot {detail}", file=None)
            bar.__enter__()
        elif step == "write" and bar is not None:
            bar.update(1)

    try:
        result = do_install(bundle, root, list(trusted_key), force, layout=_layout(root, board), progress=progress,
                            max_boots=max_boots, cross=cross)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    _echo(result, as_json, f"installed {result['version']} into slot {result['slot']} (unvalidated, "
                           f"{result['max_boots']} trial boots); run 'ganglion firmware validate --root {root}'")


@firmware.command()
@root_option
@board_option
@json_option
def status(root, board, as_json):
    """Show which slot runs, what each slot holds and which versions failed.

    \b
    Example:
      ganglion firmware status --root / --json
    """
    info = do_status(root, layout=_layout(root, board))
    _echo(info, as_json, render(info))


@firmware.command()
@root_option
@board_option
@click.option("--broker", default=None,
              help="MQTT broker that must answer: mqtt://HOST[:PORT], mqtts://HOST[:PORT] (TLS, default port "
                   "8883) or HOST[:PORT] (plain, default 1883).")
@old_broker_tls
@trusted_keys("Re-verify the slot manifest's signature with this public key (repeatable).")
@click.option("--threads", default=1, show_default=True)
@click.option("--python", "python", default=None,
              help="Interpreter command for the self-test, e.g. 'qemu-aarch64-static -L SYSROOT -cpu "
                   "cortex-a72 SYSROOT/usr/bin/python3.11' (default: this Python).")
@json_option
def validate(root, board, broker, ca_file, cert_file, key_file, username, password, trusted_key, threads, python,
             as_json):
    """Health-check the active slot: mark it valid, or revert it. Exit 5 if it failed.

    \b
    Examples:
      ganglion firmware validate --root /
      ganglion firmware validate --root / --broker mqtts://broker:8883 --ca-file ca.pem --username dev \\
          --password-file /etc/ganglion/password
    """
    tls = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    auth = {"username": username, "password": password}
    report = do_validate(root, trusted=list(trusted_key) or None, broker=broker,
                         broker_tls=tls if any(tls.values()) else None,
                         broker_auth=auth if any(v is not None for v in auth.values()) else None,
                         threads=threads, python=shlex.split(python) if python else None,
                         layout=_layout(root, board))
    _echo(report, as_json, render_report(report))
    if report["ok"]:
        return
    raise HealthCheckError(f"validation failed: {report['reason']}", code="firmware.validation_failed")


@firmware.command()
@root_option
@board_option
@click.option("--reason", default="manual revert", show_default=True)
@json_option
def revert(root, board, reason, as_json):
    """Make the previous valid slot active again.

    \b
    Example:
      ganglion firmware revert --root / --reason "camera driver broke"
    """
    result = do_revert(root, reason, layout=_layout(root, board))
    _echo(result, as_json, f"reverted from slot {result['from']} to {result['to']} ({result['version']})")


@firmware.command()
@root_option
@board_option
@json_option
def boot(root, board, as_json):
    """Start-up decision: count an unvalidated boot, revert past the bound; print the slot to run.

    \b
    Example:
      ganglion firmware boot --root /   # `ganglion run --firmware-root /` does this itself
    """
    result = do_boot(root, layout=_layout(root, board))
    _echo(result, as_json, f"{result['action']}: slot {result['slot']} ({result['version']}, "
                           f"{result['status']}) at {result['path']}")
