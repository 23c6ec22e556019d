"""Shared test wiring. Fixtures live in tests/fixtures/, one module per concern."""
import compileall
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Packages the suite's subprocesses (`ganglion ...`, daemons, fleet hubs, test helpers) import.
COMPILED = ("core", "boards", "edge", "converters", "firmware", "fleet", "tests")

pytest_plugins = [
    "tests.fixtures.broker",   # a real mosquitto on a free loopback port
    "tests.fixtures.nats",     # a real 3-node NATS JetStream cluster (MQTT 3.1.1) on loopback
    "tests.fixtures.models",   # small ONNX models built by committed scripts
]


def pytest_sessionstart(session):
    """Byte-compile the project once before any test runs.

    With PYTHONDONTWRITEBYTECODE set (CI containers and this machine set it) no __pycache__ is ever
    written, so each of the suite's hundreds of subprocesses recompiled ~200 modules from source
    (~0.3-0.6 s CPU each, 20 s in tests/converters/test_imports.py alone). The variable only stops
    *writing*: Python still reads a valid .pyc, and a stale one (source mtime/size changed) is ignored.
    """
    del session
    if sys.dont_write_bytecode:
        for package in COMPILED:
            compileall.compile_dir(ROOT / package, quiet=2)
