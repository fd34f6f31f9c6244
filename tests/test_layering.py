"""Dependencies point down: the library never pulls in Prefect, only executors use Ray, engines
know nothing of how rounds are laid out, and the manifest module knows nothing of engines."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "stepedit_core"

CHECK = """
import sys
import stepedit_core.run, stepedit_core.shard, stepedit_core.executors.local
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


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", _files(CORE / "engines"), ids=lambda p: p.name)
def test_engines_do_not_import_the_round_layout_or_anything_above_them(path):
    above = (
        "stepedit_core.rounds",
        "stepedit_core.shard",
        "stepedit_core.run",
        "stepedit_core.planning",
        "stepedit_core.manifest",
        "stepedit_core.executors",
        "stepedit_flows",
        "stepedit_tasks",
    )
    bad = sorted(m for m in imported_modules(path) if m.startswith(above))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    "module", ["manifest.py", "records.py", "stages.py", "edits.py", "failures.py", "audio.py"]
)
def test_foundation_modules_do_not_import_engines(module):
    bad = sorted(
        m for m in imported_modules(CORE / module) if m.startswith("stepedit_core.engines")
    )
    assert not bad, f"{module} imports {bad}"


def test_engine_base_does_not_import_the_registry_above_it():
    imported = imported_modules(CORE / "engines" / "base.py")
    assert not any(m == "stepedit_core.engines" for m in imported)


SIGNAL_ABOVE = (
    "stepedit_core.engines",
    "stepedit_core.qc",
    "stepedit_core.delivery",
    "stepedit_core.delivered_files",
    "stepedit_core.encoding",
    "stepedit_core.rounds",
    "stepedit_core.shard",
    "stepedit_core.run",
    "stepedit_core.stages",
    "stepedit_core.records",
    "stepedit_core.planning",
    "stepedit_core.executors",
    "stepedit_flows",
    "stepedit_tasks",
)


@pytest.mark.parametrize("path", _files(CORE / "signal"), ids=lambda p: p.name)
def test_signal_primitives_import_nothing_above_them(path):
    """The signal primitives sit below QC, delivery and the engines (no circle through them)."""
    bad = sorted(m for m in imported_modules(path) if m.startswith(SIGNAL_ABOVE))
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("module", ["qc.py", "encoding.py"])
def test_qc_and_encoding_do_not_reach_into_the_engines(module):
    imported = imported_modules(CORE / module)
    bad = sorted(m for m in imported if m.startswith("stepedit_core.engines"))
    assert not bad, f"{module} imports {bad}"
