"""Issue 9, item 13: one name per concept across every command (core/vocab.py, docs/cli.md).

Walks the real click tree of ``ganglion``: no visible option uses an old spelling, every command
that prints data has ``--json``, every command's help shows an example, and the old spellings
still work (hidden aliases). The converter's commands (convert, verify, inspect) are checked by
their own tests."""
import click
import pytest

from edge.cli import cli, main

OLD = {"--trust", "--artifact-trust", "--firmware-key", "--key", "--cert", "--broker-ca", "--broker-cert",
       "--broker-key", "--broker-username", "--broker-password", "--broker-password-file"}
CONVERTER = {"convert", "verify", "inspect"}
PRINTS_DATA = {"bench", "doctor", "boards list", "boards show", "keys generate", "telemetry watch",
               "firmware build", "firmware inspect", "firmware verify", "firmware install", "firmware status",
               "firmware validate", "firmware revert", "firmware boot"}


def _leaves(group=cli, prefix=""):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        if not prefix and name in CONVERTER:
            continue
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            yield from _leaves(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


LEAVES = dict(_leaves())


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_one_spelling_per_concept_and_an_example_in_every_help(name):
    cmd = LEAVES[name]
    visible = {opt for p in cmd.params if isinstance(p, click.Option) and not p.hidden for opt in p.opts}
    assert not visible & OLD, f"{name} shows old flag names {visible & OLD}"
    if name in PRINTS_DATA:
        assert "--json" in visible, name
    text = cmd.get_help(click.Context(cmd, info_name=name))
    assert "Example" in text, f"{name} --help has no example"


def test_every_data_command_was_found():
    assert PRINTS_DATA <= set(LEAVES)


def test_old_spellings_still_work(tmp_path, capsys):
    assert main(["keys", "generate", "-o", str(tmp_path / "k"), "--json"]) == 0
    capsys.readouterr()
    # --trust (old) and --trusted-key (new) both pass click and reach the bundle check
    for flag in ("--trust", "--trusted-key"):
        assert main(["firmware", "verify", str(tmp_path / "k.pub"), flag, str(tmp_path / "k.pub")]) == 5
        assert "error[firmware.corrupt]" in capsys.readouterr().err
    assert main(["firmware", "verify", str(tmp_path / "k.pub")]) == 2          # still required
    assert "Missing option '--trusted-key'" in capsys.readouterr().err


def test_a_missing_file_is_exit_3_in_every_command(tmp_path, capsys):
    """Issue 9: a missing file was 2 in one command, 3 or 4 in others (78 for run: docs/cli.md)."""
    gone = str(tmp_path / "gone")
    assert main(["bench", gone]) == 3
    assert main(["firmware", "verify", gone, "--trusted-key", gone]) == 3
    assert main(["boards", "show", gone + ".toml"]) == 3
    assert main(["telemetry", "send-file", "cam1", "deploy", gone]) == 3
    err = capsys.readouterr().err
    assert err.count("does not exist") >= 3 and "Traceback" not in err
