"""One registry of failure codes: the README matches it, the code emits only registered codes,
and a run's counts add up whatever kind of failure its rows met."""

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from work_items import row_item

from stepedit_core.engines.signal import SignalEngine
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation import edits, failures
from stepedit_core.foundation.failures import CODES, ItemFailure, UnknownFailureCode
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job
from stepedit_tasks.summary import summary_markdown, summary_text

from conftest import write_clip, write_manifest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p for p in (ROOT / "stepedit_core").rglob("*.py")] + list((ROOT / "flows").glob("*.py"))


def _between(text: str, marker: str) -> str:
    start, end = f"<!-- {marker}:start -->\n", f"<!-- {marker}:end -->"
    return text[text.index(start) + len(start) : text.index(end)]


def test_readme_tables_are_the_registries():
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, "failure-codes") == failures.markdown_table()
    assert _between(readme, "edit-table") == edits.markdown_table()


def _emitted_codes() -> set[str]:
    """Codes written literally where a failure is raised or recorded."""
    pattern = re.compile(
        r'(?:ItemFailure\(|\.fail\(|RowResult\.failed\([^"]*?)\s*"([a-z_]+)"', re.S
    )
    found: set[str] = set()
    for path in SOURCES:
        found.update(pattern.findall(path.read_text()))
    return found


def test_every_emitted_code_is_registered_and_every_registered_code_is_emitted():
    emitted = _emitted_codes()
    assert emitted, "the scan found no failure sites"
    assert emitted - set(CODES) == set()
    assert set(CODES) - emitted == set(), "registered codes that nothing emits"


def test_an_unregistered_code_is_a_programming_error():
    with pytest.raises(UnknownFailureCode):
        ItemFailure("no_such_code", "x")
    with pytest.raises(UnknownFailureCode):
        row_item(0, "a", "a.wav", ()).fail("oops", "x")


class _DropOne:
    """Executor that loses one item, as a crashed worker would."""

    name = "drop-one"

    def run(self, stages, items):
        for item in LocalExecutor().run(stages, items):
            if item.clip_id != "lost":
                yield item


class _SilentEngine(SignalEngine):
    """The signal engine, except that clip `silent` comes out of its stage with no audio."""

    def build_stages(self):
        (stage,) = super().build_stages()
        real = stage.process_item

        def process_item(item):
            if item.clip_id != "silent":
                real(item)

        stage.process_item = process_item
        return [stage]


def test_run_counts_add_up_for_every_kind_of_failure(tmp_path, monkeypatch):
    good = write_clip(tmp_path / "good.wav", 1.0)
    not_audio = tmp_path / "text.wav"
    not_audio.write_text("not audio")
    rows = [
        {"clip_id": "ok", "audio_uri": good},
        {"clip_id": "ok", "audio_uri": good},  # duplicate_clip_id
        {"clip_id": "bad-edit", "audio_uri": good, "edit": "speed=99"},  # invalid_edit
        {"clip_id": "model", "audio_uri": good, "edit": "emotion=happy"},  # unsupported_edit
        {"clip_id": "gone", "audio_uri": str(tmp_path / "gone.wav")},  # missing_file
        {"clip_id": "text", "audio_uri": str(not_audio)},  # not_audio
        {"clip_id": "short", "audio_uri": write_clip(tmp_path / "s.wav", 0.2)},  # too_short
        {"clip_id": "silent", "audio_uri": good},  # no_output
        {"clip_id": "lost", "audio_uri": good},  # lost_item
        {"clip_id": "", "audio_uri": good},  # missing_clip_id
    ]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    job = JobSpec(
        manifest_uri=manifest, out=str(tmp_path / "out"), run_id="r", edits=["loudness=-23"]
    )
    monkeypatch.setattr("stepedit_core.lifecycle.run.make_engine", lambda *a: _SilentEngine())
    record = run_job(job, executor=_DropOne())

    expected = {
        "duplicate_clip_id": 1,
        "invalid_edit": 1,
        "unsupported_edit": 1,
        "missing_file": 1,
        "not_audio": 1,
        "too_short": 1,
        "no_output": 1,
        "lost_item": 1,
        "missing_clip_id": 1,
    }
    assert record["errors_by_code"] == expected
    counts = record["counts"]
    assert counts["failed"] == sum(record["errors_by_code"].values()) == 9
    assert counts["ok"] == 1 and counts["rows"] == len(rows)
    table = pq.read_table(tmp_path / "out" / "r" / "manifest.parquet").to_pylist()
    assert sum(r["status"] == "failed" for r in table) == counts["failed"]
    assert all(r["error_code"] for r in table if r["status"] == "failed")
    # the command line and the Prefect artifact print the same counts
    text, markdown = summary_text(record), summary_markdown(record)
    assert "1 ok, 9 failed (4 refused at plan time)" in text
    for code, n in expected.items():
        assert f"  {code}: {n}" in text
        assert f"| `{code}` | {n} |" in markdown
