"""core.keys without cryptography: a slot's self-test runs with the board's wheels only (numpy,
LiteRT and ganglion itself), so reading an artifact must not need it; using a key says what is missing."""
import subprocess
import sys

BLOCKED = "import sys\nfor m in ('cryptography', 'click', 'paho', 'packaging', 'onnx', 'pydantic'):\n    sys.modules[m] = None\n"


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED + code], capture_output=True, text=True, timeout=120)


def test_the_self_test_imports_with_the_board_wheels_only():
    out = _run("import firmware.selftest, core.artifact\nprint('ok')")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_a_key_operation_without_cryptography_names_it():
    out = _run("from core import keys\nfrom core.errors import SignatureError\n"
               "try:\n    keys.load_public('k.pub')\nexcept SignatureError as e:\n    print(e.code, e.exit_code)")
    assert out.stdout.split() == ["keys.unavailable", "5"], out.stderr
