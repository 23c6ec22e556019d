"""The ``ganglion keys`` / ``ganglion firmware`` commands end to end, through edge.cli.main (exit codes)."""
from __future__ import annotations

import json

import pytest

from edge.cli import main
from tests.firmware import helpers


@pytest.fixture
def host(tmp_path, wheelhouse):
    helpers.tiny_gpk(tmp_path / "model.gpk")
    (tmp_path / "daemon.toml").write_bytes(helpers.CONFIG)
    assert main(["keys", "generate", "-o", str(tmp_path / "k")]) == 0
    return tmp_path


def build_args(host, wheelhouse, out, version="1.0.0", **extra):
    args = ["firmware", "build", "--board", "x86_64-generic", "--artifact", str(host / "model.gpk"),
            "--config", str(host / "daemon.toml"), "--key", str(host / "k"), "-o", str(out),
            "--wheelhouse", str(wheelhouse), "--version", version]
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    return args


def test_full_cycle_through_the_cli(host, wheelhouse, capsys):
    fw, root, pub = host / "app.fw", host / "root", str(host / "k.pub")
    assert main(build_args(host, wheelhouse, fw)) == 0
    assert main(["firmware", "verify", str(fw), "--trust", pub]) == 0
    assert main(["firmware", "inspect", str(fw), "--trust", pub, "--json"]) == 0
    capsys.readouterr()
    assert main(["firmware", "inspect", str(fw), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"] is None and info["signed"] and info["manifest"]["version"] == "1.0.0"
    assert main(["firmware", "install", str(fw), "--root", str(root), "--trust", pub]) == 0
    capsys.readouterr()
    assert main(["firmware", "boot", "--root", str(root), "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert (decision["action"], decision["slot"], decision["boot_count"]) == ("trial", "a", 1)
    assert main(["firmware", "validate", "--root", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["firmware", "status", "--root", str(root)]) == 0
    assert "* a: valid" in capsys.readouterr().out
    fw2 = host / "app2.fw"
    assert main(build_args(host, wheelhouse, fw2, "1.1.0")) == 0
    assert main(["firmware", "install", str(fw2), "--root", str(root), "--trust", pub, "--json"]) == 0
    assert main(["firmware", "validate", "--root", str(root)]) == 0
    capsys.readouterr()
    # a replayed older bundle: exit 5, one readable message, nothing changed
    assert main(["firmware", "install", str(fw), "--root", str(root), "--trust", pub]) == 5
    assert "error[firmware.downgrade]" in capsys.readouterr().err
    assert main(["firmware", "revert", "--root", str(root)]) == 0
    capsys.readouterr()
    assert main(["firmware", "status", "--root", str(root), "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert (state["active"], state["previous"]) == ("a", "b")


def test_refusals_exit_5_with_one_message(host, wheelhouse, capsys, tmp_path):
    fw, pub = host / "app.fw", str(host / "k.pub")
    assert main(build_args(host, wheelhouse, fw)) == 0
    data = bytearray(fw.read_bytes())
    data[len(data) // 2] ^= 1
    bad = tmp_path / "bad.fw"
    bad.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["firmware", "verify", str(bad), "--trust", pub]) == 5
    err = capsys.readouterr().err
    assert err.startswith("error[firmware.") and "Traceback" not in err
    assert main(["firmware", "install", str(bad), "--root", str(tmp_path / "r"), "--trust", pub]) == 5
    assert not (tmp_path / "r" / "ganglion").exists()


def test_keys_are_never_overwritten(host):
    assert main(["keys", "generate", "-o", str(host / "k")]) == 5


@pytest.mark.parametrize("problem,code", [
    ("config", "firmware.config"), ("version", "firmware.version"), ("artifact", "firmware.artifact"),
    ("wheels", "firmware.no_wheels"), ("board", "board.unknown"),
])
def test_build_failures_are_typed_and_write_no_bundle(host, wheelhouse, tmp_path, capsys, problem, code):
    out = tmp_path / "out.fw"
    args = build_args(host, wheelhouse, out)
    if problem == "config":
        (host / "daemon.toml").write_text("[daemon\n")
    elif problem == "version":
        args[args.index("--version") + 1] = "one.two"
    elif problem == "artifact":
        raw = bytearray((host / "model.gpk").read_bytes())
        raw[len(raw) // 3] ^= 0xFF
        (host / "model.gpk").write_bytes(bytes(raw))
    elif problem == "wheels":
        empty = tmp_path / "empty"                    # a wheelhouse with nothing for the board
        empty.mkdir()
        args[args.index("--wheelhouse") + 1] = str(empty)
    elif problem == "board":
        args[args.index("--board") + 1] = "rpi3"
    capsys.readouterr()
    assert main(args) != 0
    assert f"error[{code}]" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.fw.*"))


@pytest.mark.parametrize("config,fragment", [
    ('device_id = "d"\n[daemon]\nx = 1\n', "unknown setting"),
    ('board = "rpi4"\n', "says board 'rpi4'"),
    ('[model]\npath = "model.gpk"\n', "not the bundled artifact"),
    # cross-field rules are part of the schema: the device would refuse these, so the build does
    ('[[sinks]]\nkind = "mqtt"\n', "telemetry.broker: an mqtt source or sink needs a broker"),
    ('device_id = "cam.1"\n', "invalid device id 'cam.1'"),
    ('[telemetry]\nbroker = "mqtt://h"\ncert_file = "c.pem"\n', "needs both cert_file and key_file"),
])
def test_the_daemon_config_is_checked_with_the_daemon_schema(host, wheelhouse, tmp_path, capsys, config,
                                                            fragment):
    (host / "daemon.toml").write_text(config)
    capsys.readouterr()
    assert main(build_args(host, wheelhouse, tmp_path / "out.fw")) == 5
    err = capsys.readouterr().err
    assert "error[firmware.config]" in err and fragment in err


def test_a_config_naming_the_bundled_artifact_is_accepted(host, wheelhouse, tmp_path):
    (host / "daemon.toml").write_text('board = "x86_64-generic"\n[model]\npath = "../artifact/model.gpk"\n')
    assert main(build_args(host, wheelhouse, tmp_path / "out.fw")) == 0


def test_a_board_with_its_own_slot_layout(host, wheelhouse, tmp_path, capsys):
    import boards
    text = (boards.BOARDS_DIR / "x86_64-generic.toml").read_text()
    text = text.replace('a = "ganglion/slots/a"', 'a = "data/fw/one"').replace(
        'b = "ganglion/slots/b"', 'b = "data/fw/two"').replace(
        'state = "ganglion/state.json"', 'state = "data/fw/state.json"').replace(
        'base = "ganglion"', 'base = "data/fw"')
    board = tmp_path / "custom.toml"
    board.write_text(text)
    fw, root, pub = host / "app.fw", tmp_path / "root", str(host / "k.pub")
    assert main(build_args(host, wheelhouse, fw)) == 0
    assert main(["firmware", "install", str(fw), "--root", str(root), "--trust", pub, "--board", str(board)]) == 0
    assert (root / "data/fw/one/manifest.json").is_file() and (root / "data/fw/state.json").is_file()
    # only the board record sits at the fixed place; slots and state live where the board says
    assert sorted(p.name for p in (root / "ganglion").iterdir()) == ["board.json"]
    assert main(["firmware", "validate", "--root", str(root), "--board", str(board)]) == 0
    capsys.readouterr()
    assert main(["firmware", "status", "--root", str(root), "--board", str(board), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["slots"]["a"]["status"] == "valid"


def test_refused_install_never_says_writing_and_validate_prints_text(host, wheelhouse, capsys):
    """Issue 9: install said "verified; writing slot" before refusing the same version; validate
    printed Python dicts."""
    fw, root, pub = host / "app.fw", host / "root", str(host / "k.pub")
    assert main(build_args(host, wheelhouse, fw)) == 0
    assert main(["firmware", "install", str(fw), "--root", str(root), "--trust", pub]) == 0
    assert main(["firmware", "validate", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "slot a (1.0.0) is valid" in out and "{" not in out
    assert main(["firmware", "install", str(fw), "--root", str(root), "--trust", pub]) == 5
    got = capsys.readouterr()
    assert "error[firmware.same_version]" in got.err and "writing" not in got.out + got.err


def test_a_failed_validation_reads_as_sentences():
    from firmware.validate import render
    text = render({"slot": "b", "version": "1.1.0", "ok": False, "failed_check": "selftest",
                   "failure_class": "permanent", "reason": "output 0 differs", "checks": {"files": "12 files match"},
                   "revert": {"from": "b", "to": "a", "version": "1.0.0", "failed": True,
                              "failure": {"class": "permanent", "blacklisted": True, "count": 1, "max_retries": 3}}})
    assert text.splitlines() == ["slot b (1.1.0) FAILED the selftest check (permanent): output 0 differs",
                                 "  files: 12 files match", "  reverted from slot b to slot a (1.0.0)",
                                 "  version 1.1.0 is refused from now on (install --force to retry it)"]


def test_the_build_refuses_what_the_device_would_with_every_problem_named(host, wheelhouse, tmp_path, capsys):
    """Issue 10 item 2: the same validation as ``ganglion run`` on the device, every problem at once."""
    (host / "daemon.toml").write_text('[workers]\ncount = 0\nstart_method = "bogus"\n'
                                      '[telemetry]\nbrokr = "mqtt://h"\n')
    capsys.readouterr()
    out = tmp_path / "out.fw"
    assert main(build_args(host, wheelhouse, out)) == 5
    err = capsys.readouterr().err
    assert "error[firmware.config]: daemon config: unknown setting(s): telemetry.brokr" in err
    assert "workers.count must be 1..64; got 0" in err
    assert "workers.start_method must be one of spawn, forkserver, fork; got 'bogus'" in err
    assert f"where: {host / 'daemon.toml'}: telemetry.brokr" in err and "allowed here: broker," in err
    assert not out.exists()
