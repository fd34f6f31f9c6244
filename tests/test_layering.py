"""Dependencies point down: the library never pulls in Prefect, only executors use Ray, engines
know nothing of how rounds are laid out, the catalog knows nothing of engines, and no module of
stepedit_core reaches itself again through others (no import cycles).

Every import counts, at any depth of a file (a function-level import is still a dependency: it
runs the first time the function does). Only imports under `if TYPE_CHECKING:` are left out:
they never run, they name types for annotations."""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "stepedit_core"

CHECK = """
import sys
import stepedit_core.lifecycle.run, stepedit_core.lifecycle.shard, stepedit_core.executors.local
import stepedit_core.engines.signal, stepedit_core.engines.stepaudio.engine
import stepedit_core.dataset, stepedit_core.report
upper = ("prefect", "ray", "stepedit_flows", "stepedit_tasks")
loaded = sorted(m for m in upper if m in sys.modules)
print(",".join(loaded))
"""


def test_library_imports_neither_prefect_nor_ray():
    result = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# --------------------------------------------------------------------------- the import graph


def module_name(path: Path) -> str:
    """`stepedit_core.pkg.mod` for ROOT/stepedit_core/pkg/mod.py (a package: its __init__)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def core_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _imports(tree: ast.AST, importer: str) -> list[tuple[str, list[str]]]:
    """(module, imported names) of every import in the tree that runs, at any depth."""
    found: list[tuple[str, list[str]]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            stack.extend(node.orelse)  # the `else:` of `if TYPE_CHECKING` does run
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                base = importer.split(".")[: -node.level]
                module = ".".join([*base, module] if module else base)
            found.append((module, [alias.name for alias in node.names]))
        stack.extend(ast.iter_child_nodes(node))
    return found


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (`from pkg import name` adds `pkg` and `pkg.name`)."""
    names: set[str] = set()
    importer = module_name(path) if path.is_relative_to(ROOT) else ""
    for module, imported in _imports(ast.parse(path.read_text()), importer):
        names.add(module)
        names.update(f"{module}.{name}" for name in imported)
    return names


def _resolve(name: str) -> str | None:
    """The stepedit_core module an import of `name` loads (the longest known prefix)."""
    modules = core_modules()
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """stepedit_core module -> the stepedit_core modules it imports; `from pkg import mod`
    points at `pkg.mod`, `from pkg import name` at `pkg`."""
    graph: dict[str, frozenset[str]] = {}
    for module, path in core_modules().items():
        targets: set[str] = set()
        for imported, names in _imports(ast.parse(path.read_text()), module):
            for name in [f"{imported}.{n}" for n in names] or [imported]:
                target = name if name in core_modules() else _resolve(imported)
                if target is not None and target != module:
                    targets.add(target)
        graph[module] = frozenset(targets)
    return graph


def cycles(graph: dict[str, frozenset[str]]) -> dict[frozenset[str], list[str]]:
    """Each group of modules that reach each other (a strongly connected component, Tarjan's
    algorithm) -> one cycle through it (modules in import order, the first again at the end)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return {frozenset(group): _cycle_in(graph, group) for group in groups}


def _cycle_in(graph: dict[str, frozenset[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{sorted(group)} is not a cycle")


# Known cycles that another change removes: entries may only be deleted, never added. Each is
# the set of modules that reach each other.
KNOWN_CYCLES: list[frozenset[str]] = []


def test_no_import_cycles_but_the_known_ones():
    found = cycles(import_graph())
    new = [
        f"{' -> '.join(cycle)} (all of {sorted(group)} reach each other)"
        for group, cycle in found.items()
        if group not in KNOWN_CYCLES
    ]
    assert not new, "import cycles: " + "; ".join(new)
    gone = [sorted(k) for k in KNOWN_CYCLES if k not in found]
    assert not gone, f"no longer a cycle: delete its KNOWN_CYCLES entry: {gone}"


def test_cycle_finder_names_a_cycle_through_a_lazy_import(tmp_path, monkeypatch):
    core = tmp_path / "stepedit_core"
    (core / "pkg").mkdir(parents=True)
    (core / "__init__.py").write_text("")
    (core / "pkg" / "__init__.py").write_text("")
    (core / "a.py").write_text("from stepedit_core.pkg import b\n")
    (core / "pkg" / "b.py").write_text("def f():\n    from stepedit_core import c\n")
    (core / "c.py").write_text("import stepedit_core.a\n")
    (core / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stepedit_core import a\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "CORE", core)
    core_modules.cache_clear()
    import_graph.cache_clear()
    try:
        graph = import_graph()
        assert graph["stepedit_core.d"] == frozenset()  # type-only imports never run
        cycle = ["stepedit_core.a", "stepedit_core.pkg.b", "stepedit_core.c", "stepedit_core.a"]
        assert cycles(graph) == {frozenset(cycle): cycle}
    finally:
        core_modules.cache_clear()
        import_graph.cache_clear()


# --------------------------------------------------------------------------- layers

# importer (a module or a package) -> what it must not import, at any depth; every rule that
# covers a module applies. The packages, bottom up: foundation (and signal) < catalog, quality
# < words, engines, executors < audit, judges, report < lifecycle < dataset < flows, tasks.
ABOVE_ALL = ("stepedit_flows", "stepedit_tasks")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "stepedit_core.foundation": (
        "stepedit_core.catalog",
        "stepedit_core.quality",
        "stepedit_core.lifecycle",
        "stepedit_core.engines",
        "stepedit_core.executors",
        "stepedit_core.words",
        "stepedit_core.audit",
        "stepedit_core.judges",
        "stepedit_core.report",
        "stepedit_core.dataset",
        *ABOVE_ALL,
    ),
    # what the manifest and records are made of knows nothing of engines or of a run
    "stepedit_core.catalog": (
        "stepedit_core.lifecycle",
        "stepedit_core.engines",
        "stepedit_core.executors",
        "stepedit_core.judges",
        "stepedit_core.report",
        "stepedit_core.dataset",
        *ABOVE_ALL,
    ),
    "stepedit_core.quality": (
        "stepedit_core.lifecycle",
        "stepedit_core.engines",
        "stepedit_core.executors",
        "stepedit_core.audit",
        "stepedit_core.judges",
        "stepedit_core.report",
        "stepedit_core.dataset",
        *ABOVE_ALL,
    ),
    # engines know nothing of how rounds are laid out or of anything above them
    "stepedit_core.engines": (
        "stepedit_core.lifecycle",
        "stepedit_core.catalog.manifest",
        "stepedit_core.executors",
        "stepedit_core.audit",
        "stepedit_core.judges",
        "stepedit_core.report",
        "stepedit_core.dataset",
        *ABOVE_ALL,
    ),
    "stepedit_core.words": (
        "stepedit_core.lifecycle",
        "stepedit_core.executors",
        "stepedit_core.report",
        "stepedit_core.dataset",
        *ABOVE_ALL,
    ),
    "stepedit_core.executors": ("stepedit_core.engines", "stepedit_core.dataset", *ABOVE_ALL),
    "stepedit_core.audit": (
        "stepedit_core.lifecycle",
        "stepedit_core.engines",
        "stepedit_core.executors",
        *ABOVE_ALL,
    ),
    "stepedit_core.report": (
        "stepedit_core.lifecycle",
        "stepedit_core.engines",
        "stepedit_core.executors",
        *ABOVE_ALL,
    ),
    "stepedit_core.judges": ("stepedit_core.lifecycle", "stepedit_core.dataset", *ABOVE_ALL),
    "stepedit_core.lifecycle": ("stepedit_core.dataset", *ABOVE_ALL),
    "stepedit_core.dataset": ABOVE_ALL,
    # signal primitives sit below QC, delivery and the engines: no circle runs through them
    "stepedit_core.signal": (
        "stepedit_core.catalog",
        "stepedit_core.quality",
        "stepedit_core.lifecycle",
        "stepedit_core.engines",
        "stepedit_core.executors",
        "stepedit_core.words",
        "stepedit_core.audit",
        "stepedit_core.judges",
        "stepedit_core.report",
        "stepedit_core.dataset",
        *ABOVE_ALL,
    ),
}

# Imports that break a rule today and that another change removes: (importer, imported);
# entries may only be deleted, never added.
KNOWN_CROSSINGS: set[tuple[str, str]] = set()


def _rules_for(module: str) -> tuple[str, ...]:
    """The forbidden prefixes of every rule that covers the module."""
    covering = [k for k in FORBIDDEN if module == k or module.startswith(k + ".")]
    return tuple(f for k in covering for f in FORBIDDEN[k])


def _breaks(imported: str, forbidden: tuple[str, ...]) -> bool:
    return any(imported == f or imported.startswith(f + ".") for f in forbidden)


def crossings() -> set[tuple[str, str]]:
    """(importer, imported module) of every import that a rule forbids."""
    found = set()
    for module, path in core_modules().items():
        forbidden = _rules_for(module)
        outside = {m for m in imported_modules(path) if not m.startswith("stepedit_core")}
        imported = import_graph()[module] | outside
        found |= {(module, m) for m in imported if _breaks(m, forbidden)}
    return found


def test_every_rule_names_modules_that_exist():
    names = [*FORBIDDEN, *(f for fs in FORBIDDEN.values() for f in fs)]
    missing = [n for n in names if n.startswith("stepedit_core") and _resolve(n) != n]
    assert not missing, f"rules name modules that do not exist: {missing}"


def test_engine_base_does_not_import_the_registry_above_it():
    imported = imported_modules(core_modules()["stepedit_core.engines.base"])
    assert "stepedit_core.engines" not in imported


def test_no_import_crosses_a_layer_but_the_known_ones():
    found = crossings()
    new = sorted(found - KNOWN_CROSSINGS)
    assert not new, "imports against the layers: " + "; ".join(f"{a} -> {b}" for a, b in new)
    gone = sorted(KNOWN_CROSSINGS - found)
    assert not gone, f"no longer imported: delete its KNOWN_CROSSINGS entry: {gone}"


@pytest.mark.parametrize(
    ("source", "imports"),
    [
        ("import stepedit_core.lifecycle.rounds\n", "stepedit_core.lifecycle.rounds"),
        (
            "def f():\n    from stepedit_core.lifecycle import shard\n",
            "stepedit_core.lifecycle.shard",
        ),
        (
            "class A:\n    def f(self):\n        import stepedit_core.lifecycle.run as r\n",
            "stepedit_core.lifecycle.run",
        ),
    ],
)
def test_imports_at_any_depth_count(tmp_path, source, imports):
    path = tmp_path / "engine.py"
    path.write_text(source)
    assert imports in imported_modules(path)
    assert _breaks(imports, FORBIDDEN["stepedit_core.engines"])


@pytest.mark.parametrize(
    "module",
    [
        "stepedit_core.catalog.records",
        "stepedit_core.foundation.traces",
        "stepedit_core.foundation.clip_spec",
    ],
)
def test_the_shared_record_schema_knows_no_engine(module):
    """The round record's shared columns and the declarations engines fill in import nothing
    from engines/; every engine column comes from an engine's own declaration."""
    bad = sorted(
        m for m in imported_modules(core_modules()[module]) if m.startswith("stepedit_core.engines")
    )
    assert not bad, f"{module} imports {bad}"
    from stepedit_core.catalog.records import RoundRecord
    from stepedit_core.engines import ENGINES, engine_class

    declared = {c.name for name in ENGINES for c in engine_class(name).trace_type.COLUMNS}
    assert declared and not declared & set(RoundRecord.SHARED_SCHEMA.names)
