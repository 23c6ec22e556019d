"""The device side must not depend on host-only code: a board has no onnx and no converter."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN_FOR_DEVICE = ("converters", "fleet", "onnx", "onnxruntime.quantization")


def imports_of(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", ["edge", "firmware", "boards"])
def test_device_packages_do_not_import_host_code(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imports_of(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_FOR_DEVICE):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_only_one_module_imports_paho():
    users = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "edge").rglob("*.py"))
             if any(n == "paho" or n.startswith("paho.") for n in imports_of(p))]
    assert len(users) <= 1, users
