"""The command line and the flows import without circles, lazy imports included: the `stepedit`
entry point (stepedit_flows.cli) sits on top and no module imports it back."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"stepedit_flows": ROOT / "flows", "stepedit_tasks": ROOT / "tasks"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def _imports(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` a file imports anywhere in it (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n in known}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (its modules in order), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_finder_sees_a_circle_through_a_lazy_import(tmp_path):
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    lazy = tmp_path / "m.py"
    lazy.write_text("def f():\n    from stepedit_flows.cli import main\n")
    assert _imports(lazy, {"stepedit_flows.cli"}) == {"stepedit_flows.cli"}


def test_flows_and_tasks_import_without_circles():
    graph = _graph()
    assert "stepedit_flows.deploy" in graph["stepedit_flows.cli"]  # the graph is read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_nothing_imports_the_command_line_back():
    importers = sorted(m for m, deps in _graph().items() if "stepedit_flows.cli" in deps)
    assert importers == []


def test_the_command_line_imports_no_prefect():
    """Prefect reads its settings when it is imported: a run points PREFECT_API_URL at the local
    server after the command line is parsed, so Prefect imported earlier would start a
    temporary server of its own (and log to the terminal) instead."""
    import subprocess
    import sys

    code = (
        "import sys, stepedit_flows.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'prefect'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
