"""The design card's layout and the direction of dependencies, checked on the source.

``rules`` imports the standard library alone; ``collectors`` import ``rules`` (its ``Sample``
port, ``pilotline.rules.sample``) and themselves; ``gateway`` imports both; nothing imports
the demo (the CLI finds it through the ``pilotline.commands`` entry point). Every import
counts: module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("rules", "collectors", "gateway", "demo")

# What each part may import from pilotline, by module prefix.
ALLOWED: dict[str, tuple[str, ...]] = {
    "rules": ("pilotline.rules",),
    "collectors": ("pilotline.collectors", "pilotline.rules.sample"),
    "gateway": ("pilotline.gateway", "pilotline.collectors", "pilotline.rules"),
    "demo": ("pilotline.demo", "pilotline.gateway", "pilotline.collectors", "pilotline.rules"),
}


def _modules(part: str) -> Iterator[tuple[str, Path]]:
    base = ROOT / part
    for path in sorted((base / "pilotline" / part).rglob("*.py")):
        rel = path.relative_to(base).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """Every module name ``path`` imports, relative imports resolved."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                name = ".".join([*package, node.module] if node.module else package)
            else:
                name = node.module or ""
            yield node.lineno, name


def _third_party(name: str) -> bool:
    top = name.split(".", maxsplit=1)[0]
    return top != "pilotline" and top not in sys.stdlib_module_names and top != "__future__"


def _violations(part: str) -> list[str]:
    found = []
    for module, path in _modules(part):
        for line, name in _imports(module, path):
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            if name.split(".")[0] == "pilotline":
                if not any(name == p or name.startswith(p + ".") for p in ALLOWED[part]):
                    found.append(where)
            elif part == "rules" and _third_party(name):
                found.append(f"{where} (rules: standard library only)")
    return found


def test_the_repository_root_is_the_design_cards() -> None:
    for name in (*PARTS, "deploy", "tests", "pyproject.toml", "README.md"):
        assert (ROOT / name).exists(), name
    assert not (ROOT / "src").exists()
    for part in PARTS:
        # One namespace over four roots: no root may own ``pilotline`` itself.
        assert not (ROOT / part / "pilotline" / "__init__.py").exists(), part
        assert (ROOT / part / "pilotline" / part / "__init__.py").exists(), part


@pytest.mark.parametrize("part", PARTS)
def test_imports_point_one_way(part: str) -> None:
    assert _violations(part) == []


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The rule above can fail: a core module importing the gateway, or a third party."""
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "from typing import TYPE_CHECKING\n"
        "import structlog\n"
        "if TYPE_CHECKING:\n"
        "    from pilotline.gateway.store import Store\n"
        "def f() -> None:\n"
        "    from ..collectors import mqtt\n"
    )
    names = [name for _, name in _imports("pilotline.rules.wrong", wrong)]
    assert names == ["typing", "structlog", "pilotline.gateway.store", "pilotline.collectors"]
    assert _third_party("structlog")
    assert not _third_party("sqlite3")


def test_nothing_outside_the_demo_imports_it() -> None:
    for part in ("rules", "collectors", "gateway"):
        for module, path in _modules(part):
            for line, name in _imports(module, path):
                assert not name.startswith("pilotline.demo"), f"{path}:{line}"
