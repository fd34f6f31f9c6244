import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepedit_core.catalog.manifest import (
    ManifestError,
    check_schema,
    clip_seed,
    write_output_manifest,
)
from stepedit_core.catalog.records import PlanRow, RowResult
from stepedit_core.engines import make_engine
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.lifecycle.planning import check_rows

from conftest import write_manifest


def test_missing_required_column_is_named(tmp_path):
    uri = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a"}])
    with pytest.raises(ManifestError, match="missing required column.*audio_uri"):
        check_schema(pq.read_schema(uri), uri)


def test_wrong_column_type_is_named():
    schema = pa.schema([("clip_id", pa.int64()), ("audio_uri", pa.string())])
    with pytest.raises(ManifestError, match="'clip_id'.*must be string, found int64"):
        check_schema(schema)


def test_output_column_clash_is_refused():
    schema = pa.schema(
        [("clip_id", pa.string()), ("audio_uri", pa.string()), ("status", pa.string())]
    )
    with pytest.raises(ManifestError, match="status"):
        check_schema(schema)


def test_row_problems_become_failure_records(tmp_path):
    rows = [
        {"clip_id": "a", "audio_uri": "a.wav"},
        {"clip_id": "a", "audio_uri": "b.wav"},  # duplicate: the later row fails
        {"clip_id": "", "audio_uri": "c.wav"},
        {"clip_id": "d", "audio_uri": None},
        {"clip_id": "e", "audio_uri": "e.wav", "edit": "emotion=joyful"},
        {"clip_id": "f", "audio_uri": "f.wav", "edit": "emotion=happy"},
        {"clip_id": "g", "audio_uri": "g.wav", "edit": "speed=1.25;loudness=-20"},
    ]
    uri = write_manifest(tmp_path / "m.parquet", rows)
    engine = make_engine("signal")
    planned = list(check_rows(uri, parse_chain("denoise"), engine, base_seed=7))
    work = [p.to_row() for p in planned if isinstance(p, PlanRow)]
    failures = {f.row_index: f.to_row() for f in planned if isinstance(f, RowResult)}
    assert [w["clip_id"] for w in work] == ["a", "g"]
    assert work[0]["edit"] == "denoise" and work[1]["edit"] == "speed=1.25;loudness=-20"
    assert failures[1]["error_code"] == "duplicate_clip_id"
    assert "row 1" in failures[1]["error"] and "'a'" in failures[1]["error"]
    assert failures[2]["error_code"] == "missing_clip_id"
    assert failures[3]["error_code"] == "missing_audio_uri"
    assert failures[4]["error_code"] == "invalid_edit" and "joyful" in failures[4]["error"]
    assert failures[5]["error_code"] == "unsupported_edit"
    assert "step-audio-editx" in failures[5]["error"]  # names the engine that can do it


def test_missing_transcript_is_a_row_failure(tmp_path):
    uri = write_manifest(
        tmp_path / "m.parquet",
        [
            {"clip_id": "a", "audio_uri": "a.wav", "text": "hello"},
            {"clip_id": "b", "audio_uri": "b.wav"},
        ],
    )
    engine = make_engine("step-audio-editx")
    planned = list(check_rows(uri, parse_chain("emotion=happy"), engine, 0))
    assert isinstance(planned[0], PlanRow)
    assert planned[1].error_code == "missing_text"


def test_clip_seed_is_stable_and_depends_on_base_seed():
    assert clip_seed("x", 0) == clip_seed("x", 0)
    assert clip_seed("x", 0) != clip_seed("x", 1)
    assert clip_seed("x", 0) != clip_seed("y", 0)


def test_merge_keeps_input_order_and_extra_columns(tmp_path):
    uri = write_manifest(
        tmp_path / "m.parquet",
        [{"clip_id": c, "audio_uri": f"{c}.wav", "owner": f"o-{c}"} for c in "abc"],
    )
    results = pa.Table.from_pylist(
        [
            RowResult.failed(2, "c", "no_audio", "bad").to_row(),
            {
                "row_index": 0,
                "clip_id": "a",
                "status": "ok",
                "output_uri": "a.flac",
                "error": None,
                "error_code": None,
                "iterations_done": 1,
            },
            RowResult.failed(1, "b", "not_audio", "worse").to_row(),
        ]
    )
    sink = io.BytesIO()
    counts = write_output_manifest(uri, results, sink)
    table = pq.read_table(io.BytesIO(sink.getvalue()))
    assert table.column("clip_id").to_pylist() == ["a", "b", "c"]
    assert table.column("owner").to_pylist() == ["o-a", "o-b", "o-c"]
    assert table.column("status").to_pylist() == ["ok", "failed", "failed"]
    assert (counts.ok, counts.failed, counts.rows) == (1, 2, 3)
    assert counts.errors_by_code == {"no_audio": 1, "not_audio": 1}


def test_merge_refuses_to_drop_rows(tmp_path):
    uri = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": "a.wav"}])
    empty = RowResult.SCHEMA.empty_table()
    with pytest.raises(RuntimeError, match="no result recorded for input rows"):
        write_output_manifest(uri, empty, io.BytesIO())
