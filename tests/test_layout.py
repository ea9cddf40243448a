"""The design card's layout and the direction of dependencies, checked on the source.

``rules`` imports the standard library alone; ``collectors`` import ``rules`` (its ``Sample``
port, ``pilotline.rules.sample``) and themselves; ``gateway`` imports both; nothing imports
the demo (the CLI finds it through the ``pilotline.commands`` entry point). Every import
counts: module level, inside functions, and under ``TYPE_CHECKING``. No two modules import
each other, directly or around a loop.
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


def _import_statements(module: str, path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """Every import statement of ``path``: its line, the module named (relative imports
    resolved) and, for ``from M import a, b``, the names imported (else none)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                if not is_package:
                    package = package[:-1]
                package = package[: len(package) - (node.level - 1)]
                name = ".".join([*package, node.module] if node.module else package)
            else:
                name = node.module or ""
            yield node.lineno, name, [alias.name for alias in node.names]


def _imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    """Every module name ``path`` imports, relative imports resolved."""
    for line, name, _ in _import_statements(module, path):
        yield line, name


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


def _import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Which of ``modules`` each one imports. ``from p import m`` of a submodule ``p.m``
    counts as importing ``p.m``; the parent packages Python runs on the way (``p`` for
    ``import p.m``) do not count, so a package whose ``__init__`` re-exports its submodules'
    names is no cycle, while a submodule that imports a name back from its package is."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = graph.setdefault(module, set())
        for _, name, names in _import_statements(module, path):
            for imported in names or [""]:
                sub = f"{name}.{imported}"
                target = sub if sub in modules else name
                if target in modules and target != module:
                    targets.add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of two or more
    modules (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(found)


def test_the_repository_root_is_the_design_cards() -> None:
    for name in (*PARTS, "deploy", "tests", "pyproject.toml", "README.md"):
        assert (ROOT / name).exists(), name
    # (an old checkout may keep an ignored src/ of caches and egg-info: no source counts)
    assert not any((ROOT / "src").rglob("*.py"))
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


def test_no_module_imports_itself_back() -> None:
    modules = {name: path for part in PARTS for name, path in _modules(part)}
    cycles = _cycles(_import_graph(modules))
    assert cycles == []


def test_the_cycle_check_sees_a_cycle(tmp_path: Path) -> None:
    """Type-hint and function-level imports close a cycle; a package that re-exports its
    submodules does not, unless one of them imports from the package."""
    files = {
        "pkg/__init__.py": "from pkg.a import A\nfrom pkg.c import C\n",
        "pkg/a.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.b import B\nclass A: ...\n",
        "pkg/b.py": "def f() -> None:\n    from pkg import a\nclass B: ...\n",
        "pkg/c.py": "from pkg import d\nclass C: ...\n",
        "pkg/d.py": "from .a import A\n",
        "pkg/e.py": "from pkg import A\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = {
        name.removesuffix("/__init__.py").removesuffix(".py").replace("/", "."): tmp_path / name
        for name in files
    }
    assert _cycles(_import_graph(modules)) == [["pkg.a", "pkg.b"]]
    (tmp_path / "pkg/__init__.py").write_text("from pkg.e import *\n")  # e imports pkg back
    assert _cycles(_import_graph(modules)) == [["pkg", "pkg.e"], ["pkg.a", "pkg.b"]]


def test_nothing_outside_the_demo_imports_it() -> None:
    for part in ("rules", "collectors", "gateway"):
        for module, path in _modules(part):
            for line, name in _imports(module, path):
                assert not name.startswith("pilotline.demo"), f"{path}:{line}"


def test_test_modules_have_unique_basenames() -> None:
    """pytest imports test files by basename (rootdir-relative packages are not used): two
    ``test_x.py`` in two folders stop the whole run at collection, which only the full run
    would show."""
    seen: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in seen.items() if len(paths) > 1} == {}


def test_no_code_waits_with_wait_for() -> None:
    """``asyncio.wait_for`` on Python 3.11 loses a cancellation that arrives as the awaited
    thing completes (gh-86296, fixed in 3.12 by building it on ``asyncio.timeout``): a
    collector's reconnect loop using it once kept running after its task was cancelled, and
    CI hung in tests/integration/test_tls.py. ``async with asyncio.timeout(...)`` keeps it."""
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for part in ("rules", "collectors", "gateway", "demo")
        for path in sorted((ROOT / part).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "wait_for(" in line and "asyncio" in line
    ]
    assert found == []
