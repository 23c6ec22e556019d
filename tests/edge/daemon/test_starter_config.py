"""Issue 9, item 14: the shipped, commented starter config -- written by ``ganglion run
--write-config``, loadable as is, every commented-out key a real one, and a dry run from it."""
import re
import subprocess
import sys
from pathlib import Path

from edge.daemon import config as cfgmod
from edge.daemon.cli import STARTER_CONFIG
from tests.edge.conftest import make_gpk

GANGLION = str(Path(sys.executable).parent / "ganglion")


def _ganglion(*args, cwd=None):
    return subprocess.run([GANGLION, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd)


def test_write_config_writes_the_starter_and_a_dry_run_takes_it(tmp_path):
    res = _ganglion("run", "--write-config", tmp_path / "daemon.toml")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "daemon.toml").read_text() == STARTER_CONFIG.read_text()
    again = _ganglion("run", "--write-config", tmp_path / "daemon.toml")
    assert again.returncode == 2 and "not overwriting" in again.stderr
    make_gpk(tmp_path / "model.gpk")
    dry = _ganglion("run", "--config", "daemon.toml", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert f"folder:{tmp_path / 'in'}" in dry.stdout and "sinks: jsonl" in dry.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["daemon.toml", "model.gpk"]   # the dry run wrote nothing


def test_every_commented_key_of_the_starter_is_a_real_setting(tmp_path):
    text = STARTER_CONFIG.read_text()
    opened = re.sub(r"^# (?=\w+ = |\[)", "", text, flags=re.M)
    assert opened.count("\n[") > text.count("\n[")                 # something was commented out
    (tmp_path / "all.toml").write_text(opened)
    cfg = cfgmod.load_toml(tmp_path / "all.toml").require_model()
    assert cfg.telemetry.broker == "mqtts://broker.local:8883" and cfg.firmware.trusted_keys
    assert cfg.telemetry.client_config().url.tls            # [telemetry] is typed: checked with the rest
