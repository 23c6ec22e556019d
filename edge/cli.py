"""The one ``ganglion`` command. This module is the single place that lists every subcommand.

Subcommands live beside the code they drive and are imported only when called (click's
LazyGroup pattern), so ``ganglion --help`` and the device daemon start fast and a device
without onnx can still run ``ganglion run``. To add a command: write a click command in its
package and add one line to ``COMMANDS``.
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from core import __version__
from core.errors import GanglionError, InputError

# name -> ("module:attribute", one-line help shown by `ganglion --help` without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("converters.cli:convert", "Compile an ONNX model into an int8 TFLite / QDQ ONNX artifact."),
    "verify": ("converters.cli:verify", "Compare an artifact with its float ONNX model (SQNR, top-1, per layer)."),
    "inspect": ("converters.cli:inspect_cmd", "Show ops, tensors, quant params and sizes of .tflite/.onnx/.gpk."),
    "run": ("firmware.daemon_hook:run", "Run the supervised inference daemon."),   # + the firmware hook
    "bench": ("edge.daemon.cli:bench", "Device-side latency benchmark of an artifact."),
    "doctor": ("edge.doctor:doctor", "Report interpreters, delegates and providers found on this machine."),
    "telemetry": ("edge.telemetry.cli:telemetry", "Watch devices and send commands over MQTT."),
    "keys": ("firmware.cli:keys", "Generate ed25519 signing keys."),
    "firmware": ("firmware.cli:firmware", "Build, verify, install, validate and revert firmware bundles."),
    "boards": ("boards.cli:boards", "List and show supported boards."),
    "fleet": ("fleet.cli:fleet", "Fleet hub: registry, staged rollouts, device simulator."),
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, short_help = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            return _unavailable(name, short_help, exc)
        return getattr(module, attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, short_help: str, exc: ImportError) -> click.Command:
    """A stand-in command that explains which extra to install (the device has no onnx)."""
    missing = getattr(exc, "name", None) or str(exc)

    @click.command(name=name, help=short_help, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args):
        raise click.ClickException(
            f"'ganglion {name}' needs the module '{missing}', which is not installed here.\n"
            f"  hint: on a host, install the converter extra: pip install 'ganglion-edge[host]'")

    return stub


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ganglion")
def cli():
    """Ganglion: compile ONNX models to verified int8 artifacts, run them on edge boards
    under supervision, and watch them over MQTT.

    \b
    Typical flow:
      ganglion convert model.onnx --calib data.npz -o model.gpk
      ganglion verify model.gpk --reference model.onnx --data holdout.npz --per-layer
      ganglion run --model model.gpk --broker mqtt://127.0.0.1:1883 --device-id cam1 --watch ./in
      ganglion telemetry watch --broker mqtt://127.0.0.1:1883

    \b
    Flags mean the same everywhere: --trusted-key PUB (what is read must be signed by it),
    --signing-key KEY (signs what is written), --ca-file/--cert-file/--key-file (broker TLS),
    --json (data as JSON). Exit codes: 0 ok, 2 usage, 3 input, 4 runtime, 5 firmware,
    6 telemetry, 75 restart requested, 78 run cannot start (permanent). See docs/cli.md.
    """


def main(argv: list[str] | None = None) -> int:
    """Entry point: typed errors become one readable message and their exit code."""
    try:
        cli.main(args=argv, prog_name="ganglion", standalone_mode=False)
    except GanglionError as exc:
        if os.environ.get("GANGLION_DEBUG"):
            raise
        click.echo(exc.render(), err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return _click_exit_code(exc)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


def _click_exit_code(exc: click.ClickException) -> int:
    """click checks ``Path(exists=True)`` before a command runs and calls a missing file a usage
    error (2); everywhere else a missing file is an input error (3), so it is 3 here too (docs/cli.md)."""
    param = getattr(exc, "param", None)
    if isinstance(exc, click.BadParameter) and isinstance(getattr(param, "type", None), click.Path) \
            and "does not exist" in exc.format_message():
        return InputError.exit_code
    return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
