"""Every shipped board validates; a malformed board file fails with file, key, expected and got."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import boards
from boards.schema import BoardError
from edge.cli import main

RPI4 = (boards.BOARDS_DIR / "rpi4.toml").read_text()


def test_the_six_boards_of_the_design_are_shipped():
    assert boards.names() == sorted(["rpi4", "rpi5", "jetson-orin-nano", "coral-devboard",
                                     "x86_64-generic", "qemu-aarch64"])


@pytest.mark.parametrize("name", boards.names())
def test_every_shipped_board_validates(name):
    board = boards.load(name)
    assert board.name == name
    assert len(board.python.platform_tags) >= 3        # pip matches tags exactly: several are needed
    assert all(t.endswith(board.architecture) for t in board.python.platform_tags)
    assert board.slots.a != board.slots.b


def test_board_specifics_survive_loading():
    jetson = boards.load("jetson-orin-nano")
    assert jetson.runtime.backend == "onnxruntime" and jetson.artifact.format == "onnx"
    assert jetson.runtime.execution_providers[0] == "TensorrtExecutionProvider"
    assert jetson.runtime.engine_cache_dir.startswith("/")
    coral = boards.load("coral-devboard")
    assert (coral.runtime.delegate, coral.runtime.delegate_library) == ("edgetpu", "libedgetpu.so.1")
    assert coral.artifact.input_type == "uint8"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "myboard.toml"
    path.write_text(text)
    return path


def load_error(tmp_path, text) -> BoardError:
    with pytest.raises(BoardError) as info:
        boards.load(write(tmp_path, text))
    assert str(tmp_path / "myboard.toml") in info.value.where
    return info.value


def test_a_user_board_file_loads_by_path(tmp_path):
    board = boards.load(write(tmp_path, RPI4.replace('name = "rpi4"', 'name = "my-pi"')))
    assert board.name == "my-pi" and board.source.endswith("myboard.toml")


@pytest.mark.parametrize("edit,code,key,fragment", [
    (('threads = 4', 'threds = 4'), "board.unknown_key", "runtime.threds", "allowed here"),
    (('memory_budget_mb = 1024\n', ''), "board.missing_key", "resources.memory_budget_mb", "missing"),
    (('threads = 4', 'threads = "four"'), "board.bad_type", "runtime.threads", "an integer; got str 'four'"),
    (('threads = 4', 'threads = true'), "board.bad_type", "runtime.threads", "an integer; got bool"),
    (('backend = "litert"', 'backend = "tensorflow"'), "board.bad_value", "runtime.backend",
     "one of litert, onnxruntime; got 'tensorflow'"),
    (('version = "3.11"', 'version = 3.11'), "board.bad_type", "python.version", "a string; got float"),
    (('requirements = ["numpy>=2", "ai-edge-litert>=1.2"]', 'requirements = "numpy"'), "board.bad_type",
     "python.requirements", "a list of strings"),
    (('"manylinux_2_36_aarch64", ', '"manylinux_2_36_x86_64", '), "board.inconsistent",
     "python.platform_tags", "does not match architecture"),
    (('delegate = "xnnpack"', 'delegate = "edgetpu"'), "board.inconsistent", "runtime.delegate_library",
     "needs delegate_library"),
    (('format = "tflite"', 'format = "onnx"'), "board.inconsistent", "artifact.format", "runs tflite"),
    (('a = "ganglion/slots/a"', 'a = "../../etc"'), "board.inconsistent", "slots.a", "relative path"),
    (('b = "ganglion/slots/b"', 'b = "/ganglion/b"'), "board.inconsistent", "slots.b", "relative path"),
    (('threads = 4', 'threads = 0'), "board.bad_value", "runtime.threads", ">= 1; got 0"),   # one key: a bad value
    (('thermal_sensors = ["/sys', 'thermal_sensors = ["sys'), "board.inconsistent",
     "resources.thermal_sensors", "absolute"),
    (('[artifact]', '[artefact]'), "board.unknown_key", "artefact", "allowed here"),
])
def test_malformed_board_files_name_file_key_expected_and_got(tmp_path, edit, code, key, fragment):
    old, new = edit
    assert old in RPI4
    err = load_error(tmp_path, RPI4.replace(old, new, 1))
    assert err.code == code
    assert err.where.endswith(key)
    assert fragment in err.message + (err.hint or "")


def test_onnxruntime_boards_need_providers(tmp_path):
    jetson = (boards.BOARDS_DIR / "jetson-orin-nano.toml").read_text()
    err = load_error(tmp_path, jetson.replace('"CUDAExecutionProvider", ', '"CoreMLExecutionProvider", '))
    assert "unknown execution provider 'CoreMLExecutionProvider'" in err.message
    err = load_error(tmp_path, jetson.replace('engine_cache_dir = "/var/cache/ganglion/trt-engines"', ""))
    assert err.where.endswith("runtime.engine_cache_dir")


def test_broken_toml_syntax_is_a_board_error(tmp_path):
    err = load_error(tmp_path, RPI4.replace('[runtime]', '[runtime'))
    assert err.code == "board.toml"


def test_unknown_board_name_lists_the_known_ones():
    with pytest.raises(BoardError) as info:
        boards.load("rpi3")
    assert info.value.code == "board.unknown" and "rpi4" in info.value.hint


def test_cli_list_show_and_json(capsys):
    assert main(["boards", "list"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 6 and "TensorrtExecutionProvider" in out
    assert main(["boards", "show", "rpi4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["runtime"]["delegate"] == "xnnpack" and data["python"]["version"] == "3.11"
    assert main(["boards", "show", "rpi4"]) == 0
    assert "memory_budget_mb" in capsys.readouterr().out


def test_cli_show_of_a_bad_file_exits_non_zero_with_one_message(tmp_path, capsys):
    path = write(tmp_path, RPI4.replace("threads = 4", "threads = -1"))
    assert main(["boards", "show", str(path)]) == 3
    err = capsys.readouterr().err
    assert "error[board.bad_value]" in err and "runtime.threads" in err
