"""core.config: one schema library under boards, the daemon and telemetry; errors name the file, the
key, what was expected and what was found, every problem at once."""
from __future__ import annotations

import pytest

import boards
from boards.schema import BoardError
from core.config import Backend, Isolation, MqttVersion, values
from core.errors import UsageError
from edge.daemon import config as daemon_config
from edge.telemetry.config import TelemetryConfig

RPI4 = (boards.BOARDS_DIR / "rpi4.toml").read_text()


def daemon_error(table: dict, file: str | None = None) -> UsageError:
    with pytest.raises(UsageError) as info:
        daemon_config.from_dict(table, where=file)
    return info.value


@pytest.mark.parametrize("table, message", [
    ({"model": {"threads": "4"}}, "model.threads must be an integer; got str '4'"),
    ({"model": {"allow_cpu_fallback": 1}}, "model.allow_cpu_fallback must be true or false; got int 1"),
    ({"batch": {"budget_ms": float("inf")}}, "batch.budget_ms must be a finite number; got float inf"),
    ({"batch": {"max_batch": 2000}}, "batch.max_batch must be 1..1024; got 2000"),
    ({"workers": {"isolation": "none"}}, "workers.isolation must be one of process, thread; got 'none'"),
    ({"sources": [{"kind": "folder"}, {"kind": "ftp"}]},
     "sources[1].kind must be one of folder, replay, mqtt, camera; got 'ftp'"),
    ({"telemetry": {"keepalive": 1}}, "telemetry.keepalive must be 5..3600; got 1"),
    ({"telemetry": {"mqtt_version": "4"}}, "telemetry.mqtt_version must be one of auto, 5, 3.1.1; got '4'"),
    ({"metrics": []}, "metrics must be a table; got list []"),
])
def test_one_problem_names_key_expected_and_found(table, message):
    err = daemon_error(table, "d.toml")
    assert err.message == message and err.code == "usage.config"
    assert err.where == f"d.toml: {message.split(' ')[0]}"


def test_every_problem_is_reported_at_once_typos_first():
    err = daemon_error({"workers": {"count": 0, "start_method": "bogus"}, "telemetry": {"brokr": "x"},
                        "sinks": [{"kind": "mqtt"}]}, "bundle/daemon.toml")
    lines = err.message.splitlines()
    assert lines[0] == "unknown setting(s): telemetry.brokr"
    assert lines[1:] == ["  also: workers.count must be 1..64; got 0",
                         "  also: workers.start_method must be one of spawn, forkserver, fork; got 'bogus'"]
    assert err.where == "bundle/daemon.toml: telemetry.brokr" and err.hint.startswith("allowed here: broker,")


def test_cross_field_rules_are_in_the_schema_and_keep_their_own_code():
    err = daemon_error({"device_id": "a.b", "sinks": [{"kind": "mqtt"}]})
    assert err.code == "usage.device_id" and err.where == "device_id"
    assert "  also: telemetry.broker: an mqtt source or sink needs a broker" in err.message
    cfg = daemon_config.from_dict({"sinks": [{"kind": "mqtt"}], "telemetry": {"broker": "mqtt://h:1"}})
    assert cfg.telemetry.client_config().url.port == 1 and cfg.telemetry.spool is None


def test_direct_construction_raises_the_schema_error_too():
    with pytest.raises(UsageError) as info:
        TelemetryConfig(keepalive=1, inflight=0)
    assert info.value.where == "telemetry.keepalive" and "telemetry.inflight must be 1..1000" in info.value.message


def test_a_board_file_reports_every_problem_with_its_own_codes(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text(RPI4.replace("threads = 4", "threds = 4").replace('delegate = "xnnpack"', 'delegate = "tpu"')
                    .replace("memory_budget_mb = 1024", "memory_budget_mb = 8"))
    with pytest.raises(BoardError) as info:
        boards.load(path)
    err = info.value
    assert err.code == "board.unknown_key" and err.where == f"{path}: runtime.threds"
    assert "runtime.delegate must be one of none, xnnpack, edgetpu, gpu; got 'tpu'" in err.message
    assert "resources.memory_budget_mb must be >= 16; got 8" in err.message


def test_config_set_goes_through_the_same_schema():
    cfg = daemon_config.from_dict({"model": {"path": "m"}})
    assert daemon_config.replace(cfg, "telemetry.keepalive", 60).telemetry.keepalive == 60
    with pytest.raises(UsageError, match="telemetry.keepalive must be 5..3600; got 4"):
        daemon_config.replace(cfg, "telemetry.keepalive", 4)


def test_closed_sets_are_defined_once_and_read_by_the_cli():
    from edge.daemon.cli import run
    from edge.telemetry.mqtt import MQTT_VERSIONS
    choices = {p.name: tuple(p.type.choices) for p in run.params if hasattr(p.type, "choices")}
    assert choices["backend"] == values(Backend) == boards.schema.BACKENDS
    assert choices["isolation"] == values(Isolation)
    assert choices["mqtt_version"] == values(MqttVersion) == MQTT_VERSIONS
