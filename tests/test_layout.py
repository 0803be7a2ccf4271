"""Where tests' helpers live and who may import them (docs/development.md, "Tests' helpers"), checked on
the source with ``ast``:

- no module imports a test module (``test_*``): what two tests share is a helper in tests/helpers/;
- benchmarks/ and scripts/ import nothing of tests/ except ``tests.helpers``;
- every module under tests/ is a test (``test_*.py``), a ``conftest.py``, an ``__init__.py`` or a module
  of tests/helpers/: no helper loose at the top of tests/ or beside the tests of a package.

Every import counts, at any depth (an import inside a function too), relative ones resolved against
their package.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
HELPERS = TESTS / "helpers"
PLACES = ("tests", "benchmarks", "scripts", "ssd_runtime", "ssd_train", "ssd_export")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _sources() -> list[Path]:
    return sorted(p for place in PLACES for p in (ROOT / place).rglob("*.py") if "__pycache__" not in p.parts)


MODULES = {_module_name(path) for path in _sources()}


def _imported(path: Path) -> set[str]:
    """Every module name ``path`` imports (``from a import b`` gives ``a``, and ``a.b`` where that is a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES)
    return found


def test_nothing_imports_a_test_module():
    wrong = sorted(f"{path.relative_to(ROOT)} imports {target}" for path in _sources() for target in _imported(path)
                   if target.startswith("tests.") and target.rpartition(".")[2].startswith("test_"))
    assert wrong == [], "move what the tests share into tests/helpers/ and import it from there"


def test_benchmarks_and_scripts_import_only_the_helpers_of_tests():
    paths = sorted([*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")])
    wrong = sorted(f"{path.relative_to(ROOT)} imports {target}" for path in paths for target in _imported(path)
                   if (target == "tests" or target.startswith("tests.")) and not
                   (target == "tests.helpers" or target.startswith("tests.helpers.")))
    assert wrong == []


def test_every_module_under_tests_is_a_test_a_conftest_or_a_helper():
    loose = sorted(str(path.relative_to(ROOT)) for path in TESTS.rglob("*.py")
                   if "__pycache__" not in path.parts and not path.is_relative_to(HELPERS)
                   and not (path.name.startswith("test_") or path.name in ("conftest.py", "__init__.py")))
    assert loose == [], "helpers belong in tests/helpers/"


def test_no_test_module_in_the_helpers():
    # pytest would collect it from there, and the rule above could not tell it from a helper
    assert sorted(p.name for p in HELPERS.rglob("test_*.py")) == []
