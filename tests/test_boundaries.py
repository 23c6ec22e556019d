"""The layers, read statically from every module's imports (ast; nothing is imported).

    core  <-  edge  <-  firmware  <-  fleet          (arrows point at what a package may import)
    core  <-  boards                                 boards: data + schema
    core  <-  converters                             host only; never imported by the device side

``ALLOWED`` is the whole list of package arrows; any other arrow fails, and so does an import
cycle between two files (imports inside functions count: hiding an import in a function does not
remove the dependency). An import inside a function is for an optional dependency only, with a
comment on that line saying why (a project module too, when it brings one: the converter's commands
load onnx only when they run); the one other kind is a package's lazy export (a module-level
``__getattr__``, PEP 562). The cycle checks see all of them.
"""
from __future__ import annotations

import ast
import pathlib
import sys
from dataclasses import dataclass, field

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("core", "boards", "edge", "firmware", "fleet", "converters")
ALLOWED = {
    "core": set(),
    "boards": {"core"},
    "converters": {"core", "boards"},
    "edge": {"core", "boards"},
    "firmware": {"core", "boards", "edge"},
    "fleet": {"core", "boards", "edge", "firmware"},
}
FORBIDDEN_FOR_DEVICE = ("converters", "fleet", "onnx", "onnxruntime.quantization")


@dataclass
class Module:
    name: str
    path: pathlib.Path
    imports: dict[str, list[int]] = field(default_factory=dict)   # project module -> lines
    external: set[str] = field(default_factory=set)               # every other imported name
    inner: list[tuple[int, str]] = field(default_factory=list)    # (line, module) inside a function


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _scan() -> dict[str, Module]:
    mods = {_module_name(p): Module(_module_name(p), p)
            for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in sorted((ROOT / pkg).rglob("*.py"))}
    for mod in mods.values():
        _read(mod, mods)
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node, mod: Module, mods: dict) -> list[str]:
    """Module names an import statement executes (``from pkg import sub`` -> ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        here = mod.name.split(".") if mod.path.name == "__init__.py" else mod.name.split(".")[:-1]
        base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]


def _executed(target: str, importer: str, mods: dict) -> list[str]:
    """What importing ``target`` runs: the module, and first each package ``__init__`` above it that
    is not already running above the importer (``a.b.c`` from ``x.y`` runs ``a``, ``a.b``, ``a.b.c``)."""
    parts = target.split(".")
    above = {".".join(importer.split(".")[:i]) for i in range(1, importer.count(".") + 2)}
    runs = [".".join(parts[:i]) for i in range(1, len(parts))]
    return [p for p in runs if p in mods and p not in above] + [target]


def _read(mod: Module, mods: dict) -> None:
    tree = ast.parse(mod.path.read_text(), filename=str(mod.path))

    def walk(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _targets(child, mod, mods):
                    target = _resolve(name, mods)
                    if target is None:
                        mod.external.add(name)
                    elif target != mod.name:
                        for runs in _executed(target, mod.name, mods):
                            mod.imports.setdefault(runs, []).append(child.lineno)
                    if in_function:
                        mod.inner.append((child.lineno, target or name))
            lazy_export = node is tree and getattr(child, "name", None) == "__getattr__"
            walk(child, (in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
                 and not lazy_export)
    walk(tree, False)


MODULES = _scan()


def _package(name: str) -> str:
    return name.split(".", 1)[0]


def test_only_the_allowed_package_arrows():
    wrong = sorted(f"{m.path.relative_to(ROOT)}:{lines[0]} imports {target} ({_package(m.name)} -> {_package(target)})"
                   for m in MODULES.values() for target, lines in m.imports.items()
                   if _package(target) != _package(m.name) and _package(target) not in ALLOWED[_package(m.name)])
    assert wrong == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_files():
    assert cycles({name: set(m.imports) for name, m in MODULES.items()}) == []


def test_no_import_cycles_between_packages():
    graph = {}
    for m in MODULES.values():
        graph.setdefault(_package(m.name), set()).update(
            _package(t) for t in m.imports if _package(t) != _package(m.name))
    assert cycles(graph) == []


def test_imports_inside_functions_are_optional_dependencies_with_a_reason():
    wrong = []
    for m in MODULES.values():
        lines = m.path.read_text().splitlines()
        for lineno, target in m.inner:
            reason = lines[lineno - 1].partition("#")[2]
            if target.split(".", 1)[0] in sys.stdlib_module_names:
                wrong.append(f"{m.path.relative_to(ROOT)}:{lineno} imports {target} (stdlib) inside a function")
            elif not reason.strip():
                wrong.append(f"{m.path.relative_to(ROOT)}:{lineno} imports {target} inside a function, no reason")
            elif target in MODULES and "optional" not in reason:
                # a project module loaded late must be loaded late for an optional dependency it brings
                wrong.append(f"{m.path.relative_to(ROOT)}:{lineno} imports {target} inside a function: {reason}")
    assert wrong == []


@pytest.mark.parametrize("package", ["core", "edge", "firmware", "boards"])
def test_device_packages_do_not_import_host_code(package):
    offenders = sorted(f"{m.path.relative_to(ROOT)} imports {name}"
                       for m in MODULES.values() if _package(m.name) == package
                       for name in list(m.external) + list(m.imports)
                       if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_FOR_DEVICE))
    assert offenders == []


def test_only_one_module_imports_paho():
    users = [name for name, m in MODULES.items()
             if any(n == "paho" or n.startswith("paho.") for n in m.external)]
    assert len(users) <= 1, users
