"""The house rules of docs/architecture.md, checked on the source: which package and which room may
import which, no import circle, and no function over 100 lines without its reason written beside it.

Imports are read with ``ast`` from every ``.py`` file of the three packages, at any depth (an import
inside a function counts: a lazy import hides a circle from Python, not from a reader).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ssd_runtime", "ssd_train", "ssd_export")
# Who may import whom, package by package (docs/architecture.md, "Packages and the one-way rule").
MAY_IMPORT = {"ssd_runtime": set(), "ssd_train": {"ssd_runtime"}, "ssd_export": {"ssd_runtime", "ssd_train"}}
# ssd_export's rooms, lowest first: a room imports the shared modules above the rooms and rooms before it
# in this list, never one after it. "shared" is every module directly in ssd_export/ except the CLI.
ROOM_ORDER = ("shared", "onnx", "int8", "tensorrt", "triton", "deploy", "cli")
MAX_LINES = 100
REASON = "# long:"  # a function over MAX_LINES carries this comment, with its reason, on or above its def


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return modules


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The modules of the three packages that module ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # `from a import b`: b is a module when a.b is one, else a name in module a
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` names a.b.c; the nearest known module is what it loads
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _room(name: str) -> str:
    parts = name.split(".")
    if len(parts) == 2 and parts[1] == "cli":
        return "cli"
    return parts[1] if len(parts) > 2 else "shared"


def test_packages_import_one_way():
    wrong = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() for target in targets
                   if (a := name.split(".")[0]) != (b := target.split(".")[0]) and b not in MAY_IMPORT[a])
    assert wrong == []


def test_export_rooms_import_down():
    rank = {room: i for i, room in enumerate(ROOM_ORDER)}
    wrong = []
    for name, targets in GRAPH.items():
        if not name.startswith("ssd_export.") or name == "ssd_export":
            continue
        for target in targets:
            if target.startswith("ssd_export.") and target != "ssd_export":
                here, there = _room(name), _room(target)
                assert here in rank and there in rank, f"{name} or {target} is in no room of ROOM_ORDER"
                if here != there and rank[there] > rank[here]:
                    wrong.append(f"{name} ({here}) imports {target} ({there})")
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    assert _cycles(GRAPH) == []


def _long_functions() -> list[str]:
    found = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                around = lines[max(first - 3, 0): node.lineno]  # the def line and the two lines above it
                if length > MAX_LINES and not any(REASON in line for line in around):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_over_100_lines_without_a_reason():
    assert _long_functions() == []


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_read(package):
    # the checks above read real files: a package that vanished from the walk would pass them silently
    assert sum(name.startswith(package) for name in MODULES) > 5
    assert any(GRAPH[name] for name in MODULES if name.startswith(package + "."))
