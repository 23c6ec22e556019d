"""LiteRT external delegates loaded by path, and what `ganglion doctor` says about them.

No accelerator here, so the honest parts: a delegate that is missing, a file that is not a
shared library, and a shared library that is not a delegate are each a typed error naming the
path (or, when allowed, a CPU fallback with an event), never a traceback; and doctor reports a
delegate library it finds but cannot load as a problem line.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from core.errors import RuntimeBackendError
from edge import doctor
from edge.backends import open_backend
from tests.edge import models

X = np.random.default_rng(7).normal(size=(2, models.IN)).astype(np.float32)
# ai_edge_litert's Delegate.__del__ trips over its own failed constructor; that is noise, not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _not_a_delegate():
    """A real shared library without tflite_plugin_create_delegate (the C maths library)."""
    import ctypes.util
    import os
    name = ctypes.util.find_library("m")
    for folder in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/lib64", "/lib"):
        if name and os.path.exists(os.path.join(folder, name)):
            return os.path.join(folder, name)
    pytest.fail("no libm found to stand in for a library that is not a delegate")


@pytest.mark.parametrize("kind", ["missing", "garbage", "not_a_delegate"])
def test_a_delegate_path_that_cannot_serve_is_a_typed_error_naming_it(tmp_path, dense_tflite, kind):
    path = {"missing": str(tmp_path / "libedgetpu.so.1"),
            "garbage": str(tmp_path / "libvx_delegate.so"),
            "not_a_delegate": None}[kind] or _not_a_delegate()
    if kind == "garbage":
        (tmp_path / "libvx_delegate.so").write_bytes(b"\x7fELF but not really")
    with pytest.raises(RuntimeBackendError) as info:
        open_backend(dense_tflite, delegate=path)
    err = info.value
    assert err.code == "runtime.delegate_missing" and err.where == path
    assert err.message.startswith(f"the delegate {path} could not be loaded: ")
    assert "ganglion doctor" in err.hint and "allow_cpu_fallback" in err.hint
    reason = {"missing": "No such file", "garbage": "", "not_a_delegate": "tflite_plugin_create_delegate"}[kind]
    assert reason in err.message


def test_fallback_from_a_library_that_is_not_a_delegate_reports_why(dense_tflite):
    path = _not_a_delegate()
    be = open_backend(dense_tflite, delegate=path, allow_cpu_fallback=True)
    (ev,) = be.events
    assert ev["event"] == "delegate_fallback" and ev["delegate"] == path
    assert "tflite_plugin_create_delegate" in ev["reason"]
    assert be.delegate is None
    np.testing.assert_allclose(be.run({"x": X})["y"], models.reference(X), rtol=1e-5, atol=1e-5)


def test_doctor_reports_a_delegate_it_finds_but_cannot_load(tmp_path, monkeypatch):
    """A present but unloadable Edge TPU library (wrong architecture, broken copy): doctor finds it
    on the library path and says it cannot be loaded, in JSON, in text and as a problem line."""
    (tmp_path / "libedgetpu.so.1").write_bytes(b"not a shared library")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    monkeypatch.setattr(doctor, "LIB_DIRS", [])                 # only the folder above
    rep = json.loads(CliRunner().invoke(doctor.doctor, ["--json"]).output)
    tpu = rep["delegates"]["edgetpu"]
    assert tpu["path"] == str(tmp_path / "libedgetpu.so.1") and tpu["loadable"] is not True
    assert any(p.startswith(f"delegate edgetpu found at {tmp_path}") for p in rep["problems"])
    text = CliRunner().invoke(doctor.doctor, []).output
    assert f"{tmp_path / 'libedgetpu.so.1'}  (NOT loadable)" in text
    assert f"problem: delegate edgetpu found at {tmp_path / 'libedgetpu.so.1'} but cannot be loaded" in text


def test_doctor_tries_a_delegate_path_the_way_the_daemon_loads_it(tmp_path):
    """`ganglion doctor --delegate PATH`: a missing file, a file that is not a library, and a real
    library that is not a delegate each get a problem line naming the path and the reason."""
    missing, garbage, libm = str(tmp_path / "libedgetpu.so.1"), str(tmp_path / "libvx_delegate.so"), _not_a_delegate()
    (tmp_path / "libvx_delegate.so").write_bytes(b"\x7fELF but not really")
    args = ["--json", "--delegate", missing, "--delegate", garbage, "--delegate", libm]
    rep = json.loads(CliRunner().invoke(doctor.doctor, args).output)
    assert set(rep["delegate_paths"]) == {missing, garbage, libm}
    assert all(v is not True for v in rep["delegate_paths"].values())
    assert "tflite_plugin_create_delegate" in rep["delegate_paths"][libm]
    for path in (missing, garbage, libm):
        assert any(p.startswith(f"delegate {path} cannot be loaded: ") for p in rep["problems"])
    text = CliRunner().invoke(doctor.doctor, ["--delegate", libm]).output
    assert f"delegate      {libm}  (NOT loadable)" in text and f"problem: delegate {libm} cannot be loaded" in text
