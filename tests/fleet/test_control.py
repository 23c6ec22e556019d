"""Clients and the hub's command topic: no hub, operator keys, bad deploy options refused before upload."""
import pytest

from core import keys
from tests.fleet.procs import Procs, make_artifact, wait_for

pytestmark = pytest.mark.mqtt


def test_no_hub_is_a_clear_error(tmp_path, mosquitto):
    out = Procs(tmp_path, mosquitto.url).cli("status", "--timeout", "1", check=False)
    assert out.returncode == 6 and "fleet hub did not answer" in out.stderr


def test_operator_key_required_by_the_hub(tmp_path, mosquitto):
    ops_key, ops_pub = keys.generate(tmp_path / "ops.key")
    procs = Procs(tmp_path, mosquitto.url)
    try:
        procs.hub("--operator-key", str(ops_pub))
        def signed_status():
            out = procs.cli("status", "--timeout", "3", "--signing-key", str(ops_key), check=False)
            return out if "fleet.unknown_deployment" in out.stderr else None     # answered: none yet

        assert wait_for(signed_status, what="the hub answering a signed command").returncode == 6
        unsigned = procs.cli("status", "--timeout", "3", check=False)
        assert unsigned.returncode == 6 and "command.unauthorized" in unsigned.stderr
    finally:
        procs.stop_all()


def test_bad_deploy_options_fail_before_anything_is_sent(tmp_path, mosquitto):
    art = make_artifact(tmp_path / "m.gpk", "2")
    procs = Procs(tmp_path, mosquitto.url)
    for args, text in [(("--waves", "50,10"), "increasing"), (("--max-failures", "150%"), "max-failures"),
                       (("--to", "tag:nokey"), "tag:KEY=VALUE"), (("--concurrency", "0"), "concurrency")]:
        out = procs.cli("deploy", str(art), "--timeout", "1", *args, check=False)
        assert out.returncode == 2 and text in out.stderr, (args, out.stderr)
