"""Fixtures for firmware tests: keys, a local wheelhouse, bundle factories, and a device root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.firmware import helpers


@pytest.fixture(scope="session")
def fw_keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    private, public = helpers.keypair(folder)
    other_private, other_public = helpers.keypair(folder, "other")
    return {"private": private, "public": public, "other_private": other_private,
            "other_public": other_public}


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """Three small pure wheels: enough members to interrupt an install at many points."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    helpers.make_wheel(folder, "ganglion_probe", "1.0", {"ganglion_probe/__init__.py": "VALUE = 42\n"})
    helpers.make_wheel(folder, "probe_extra", "2.1",
                       {f"probe_extra/m{i}.py": f"X = {i}\n" * 200 for i in range(6)})
    helpers.make_wheel(folder, "probe_data", "0.3", {"probe_data/__init__.py": "", "probe_data/blob.txt": "x" * 20000})
    return folder


@pytest.fixture(scope="session")
def broken_runtime_wheelhouse(tmp_path_factory, wheelhouse):
    """The good wheels plus a bad 'ai_edge_litert' whose interpreter returns zeros: a runtime that
    loads fine but computes wrong answers, the case only the golden self-test can catch."""
    folder = tmp_path_factory.mktemp("broken-wheelhouse")
    for wheel in wheelhouse.glob("*.whl"):
        (folder / wheel.name).write_bytes(wheel.read_bytes())
    helpers.make_wheel(folder, "ai_edge_litert", "9.9.9", {
        "ai_edge_litert/__init__.py": "__version__ = '9.9.9-broken'\n",
        "ai_edge_litert/interpreter.py": BROKEN_INTERPRETER})
    return folder


BROKEN_INTERPRETER = '''
import numpy as np

class Interpreter:
    def __init__(self, model_content=None, model_path=None, **kwargs):
        pass
    def allocate_tensors(self):
        pass
    def get_input_details(self):
        return [{"index": 0, "shape": np.array([1, 8]), "dtype": np.float32}]
    def get_output_details(self):
        return [{"index": 1, "shape": np.array([1, 4]), "dtype": np.float32}]
    def set_tensor(self, index, value):
        pass
    def invoke(self):
        pass
    def get_tensor(self, index):
        return np.zeros((1, 4), np.float32)
'''


@pytest.fixture
def make_bundle(tmp_path, fw_keys, wheelhouse):
    """make_bundle("1.2.0", key=..., wheelhouse=..., board=...) -> a real signed .fw path."""
    def make(version: str, *, key=None, wheels=None, board="x86_64-generic"):
        return helpers.bundle(tmp_path / "bundles" / version, key or fw_keys["private"], version,
                              wheelhouse=wheels or wheelhouse, board=board)
    return make


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "device-root"
    path.mkdir()
    return path


def snapshot(root: Path) -> dict:
    """Every path under root with its type, mode and bytes: 'byte-identical' made checkable."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            out[rel] = (st.st_mode, path.read_bytes() if path.is_file() and not path.is_symlink() else None)
    return out
