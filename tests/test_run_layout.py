"""The run layout is built in store.py alone, and a record's `qc_json` has one reader."""

from __future__ import annotations

import ast
import inspect
import json
import math
from pathlib import Path

import pytest

from stepedit_core.foundation.store import OutLayout, RunStore
from stepedit_core.quality.qc_result import QcResult

ROOT = Path(__file__).resolve().parent.parent
# names of the run folder's (and the output root's) entries: only store.py may join them
LAYOUT_NAMES = {"_work", "_index", "_datasets", "iterations", "audio", "audit", "report",
                "judgements", "eval", "dataset", "plan", "results", "quarantine", "run.json",
                "manifest.parquet", "records.parquet", "stepedit-run.json"}  # fmt: skip
JOINS = {"path", "join"}  # RunStore.path, posixpath.join / os.path.join


def _sources() -> list[Path]:
    files = [p for d in ("stepedit_core", "flows", "tasks") for p in (ROOT / d).rglob("*.py")]
    return sorted(p for p in files if p != Path(inspect.getfile(RunStore)))


def layout_joins(path: Path) -> list[str]:
    """`line: name` of each layout name passed as a literal to a path join in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in JOINS:
            continue
        for arg in node.args:
            if isinstance(arg, ast.Constant) and arg.value in LAYOUT_NAMES:
                found.append(f"{node.lineno}: {arg.value!r}")
    return found


def test_the_scan_finds_a_layout_path_built_outside_the_store(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('import posixpath\nstore.path("_work", "plan")\nposixpath.join(r, "audio")\n')
    assert layout_joins(sample) == ["2: '_work'", "2: 'plan'", "3: 'audio'"]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_but_the_store_builds_run_layout_paths(path):
    found = layout_joins(path)
    assert not found, f"{path.relative_to(ROOT)} builds run-layout paths (ask RunStore): {found}"


def test_store_paths_lie_in_the_run_folder_and_the_index_beside_it(tmp_path):
    store = RunStore(str(tmp_path), "r1")
    run = str(tmp_path / "r1")
    inside = [store.run_json, store.run_json_seal, store.marker, store.audit_index,
              store.report_index, store.report_summary, store.judgements_dir,
              store.eval_file("accuracy.parquet"), store.margin_set, store.plan_dir,
              store.reused_keys, store.plan_reused(), store.quarantine("x.parquet")]  # fmt: skip
    assert all(p.startswith(run + "/") for p in inside)
    assert len(set(inside)) == len(inside)
    # a delivered file is found by its name, whatever prefix it was recorded under
    assert store.delivered_file("s3://other/r1/audio/00000001-a.flac") == store.audio_path("a", 1)
    layout = OutLayout(str(tmp_path))
    assert store.margin_rows == str(tmp_path / "_datasets" / "r1" / "rows.parquet")
    assert layout.index_file("finished", "r1") == str(tmp_path / "_index/finished/r1.parquet")
    assert layout.run_json("r1") == store.run_json


def test_qc_result_reads_metrics_and_notes():
    blob = json.dumps(
        {
            "metrics": {"snr_db": 20, "lufs": None, "clipped": True, "wer": math.nan},
            "notes": {"lufs": "too short"},
        }  # fmt: skip
    )
    qc = QcResult.parse(blob)
    assert qc.error is None
    assert qc.notes == {"lufs": "too short"}
    assert qc.measured() == {"clipped": True, "snr_db": 20, "wer": qc.metrics["wer"]}
    assert qc.numeric() == {"snr_db": 20.0}  # no None, bool or NaN


@pytest.mark.parametrize(
    ("blob", "error"),
    [
        (None, None),
        ("", None),
        ('{"error": "ValueError: empty"}', "ValueError: empty"),
        ("not json", "not JSON"),
        ("[1, 2]", "expected an object"),
        ('{"metrics": [1]}', "must be objects"),
    ],
)
def test_qc_result_never_raises_on_missing_or_damaged_text(blob, error):
    qc = QcResult.parse(blob)
    assert qc.metrics == {} and qc.numeric() == {} and qc.measured() == {}
    if error is None:
        assert qc.error is None
    else:
        assert error in qc.error


def test_qc_json_is_written_where_it_is_read():
    from stepedit_core.quality.qc import QcReport

    report = QcReport({"snr_db": 20.5, "lufs": None}, {"lufs": "too short"})
    blob = report.to_json()
    assert json.loads(blob) == {
        "metrics": {"lufs": None, "snr_db": 20.5},
        "notes": {"lufs": "too short"},
    }
    assert QcResult.parse(blob) == QcResult(
        metrics={"lufs": None, "snr_db": 20.5}, notes={"lufs": "too short"}
    )
    failed = QcResult.failed(ValueError("empty")).to_json()
    assert failed == '{"error": "ValueError: empty"}'  # as records written before hold it
    assert QcResult.parse(failed).error == "ValueError: empty"
    # nothing else writes the format: no other json.dumps of a dict keyed like it
    assert [p.relative_to(ROOT).as_posix() for p in _sources() if _writes_qc_json(p)] == [
        "stepedit_core/quality/qc_result.py"
    ]


def _writes_qc_json(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "dumps":
            for arg in node.args:
                keys = {k.value for k in getattr(arg, "keys", []) if isinstance(k, ast.Constant)}
                if keys & {"metrics", "error"}:
                    return True
    return False
