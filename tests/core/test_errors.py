"""The code registry (``core.errors.CODE_FAMILIES``): every code raised anywhere in Ganglion belongs
to a family, and a family fixes the exit code, also for an error rebuilt from a worker's report."""
from __future__ import annotations

import ast
import importlib
import pathlib
import pkgutil

import pytest

from core.errors import (CODE_FAMILIES, ArtifactError, FirmwareError, GanglionError, InputError, SignatureError,
                         error_from_dict, family)

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGES = ("core", "edge", "firmware", "boards", "converters")


def _codes() -> list[tuple[str, str]]:
    """(file:line, code) for every ``code = "..."`` and ``code="..."`` literal in the project."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                value = None
                if isinstance(node, ast.keyword) and node.arg == "code":
                    value = node.value
                elif isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["code"]:
                    value = node.value
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}"
                                  if hasattr(node, "lineno") else str(path.relative_to(ROOT)), value.value))
                elif isinstance(value, ast.JoinedStr) and value.values and isinstance(value.values[0], ast.Constant):
                    found.append((str(path.relative_to(ROOT)), value.values[0].value))   # f"artifact.signature_{x}"
    return found


def test_every_code_in_the_project_has_a_family():
    codes = _codes()
    assert len(codes) > 300                                   # the scan sees the project's codes
    assert [(where, code) for where, code in codes if code.split(".", 1)[0] not in CODE_FAMILIES] == []


def _error_classes() -> set[type]:
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, package + "."):
            importlib.import_module(info.name)
    seen, todo = set(), [GanglionError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub not in seen and sub.__module__.split(".")[0] in PACKAGES:
                seen.add(sub)
                todo.append(sub)
    return seen


def test_every_error_class_exits_like_its_family():
    wrong = [(cls.__qualname__, cls.code, cls.exit_code, family(cls.code).exit_code) for cls in _error_classes()
             if cls.exit_code != family(cls.code).exit_code or cls.permanent != family(cls.code).permanent]
    assert wrong == []


@pytest.mark.parametrize("code, cls, exit_code", [
    ("artifact.signature_invalid", ArtifactError, 3),      # a tampered .gpk is bad input
    ("signature.invalid", SignatureError, 5),              # a firmware bundle's signature
    ("keys.unreadable", SignatureError, 5),
    ("firmware.health", FirmwareError, 5),
    ("convert.shape", InputError, 3),
    ("command.unauthorized", GanglionError, 6),
    ("runtime.worker_crash", GanglionError, 4),
])
def test_an_error_rebuilt_from_a_report_keeps_its_family(code, cls, exit_code):
    err = error_from_dict({"code": code, "message": "m", "where": "w", "hint": "h"})
    assert isinstance(err, cls) and err.exit_code == exit_code and err.code == code
    assert (err.message, err.where, err.hint) == ("m", "w", "h")
