"""Typed stage data: the clip spec, the engines' traces and the record columns they declare."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from work_items import records_of

from stepedit_core.audit import verify_run
from stepedit_core.audit.records import record_digest
from stepedit_core.catalog.records import RoundRecord, round_schema, round_table, table_of
from stepedit_core.engines import ENGINES, engine_class, round_record_schema
from stepedit_core.engines.signal.trace import SignalTrace
from stepedit_core.engines.stepaudio.roundtrip import PassEntry
from stepedit_core.engines.stepaudio.tokenizer import Encoded
from stepedit_core.engines.stepaudio.trace import EditedSegment, SegmentPlace, StepAudioTrace
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.clip_spec import ClipSpec
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.foundation.traces import RecordColumn
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.rounds import RoundEnd
from stepedit_core.quality.round_qc import MeasureRound
from stepedit_core.words.fillers import Cut
from stepedit_core.words.timing import OutputWords, Word

from conftest import run_inprocess, write_clip, write_manifest

# The round record's columns as runs have written them (names, types and order): a run made
# before engines declared their own columns reads and verifies as one made now. Columns are
# only ever added (audio_ref, frames); readers treat a missing one as null.
RUNS_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("row_index", pa.int64()),
        ("iteration", pa.int32()),
        ("edit", pa.string()),
        ("key", pa.string()),
        ("input_sha256", pa.string()),
        ("output_sha256", pa.string()),
        ("status", pa.string()),
        ("error_code", pa.string()),
        ("error", pa.string()),
        ("engine", pa.string()),
        ("engine_version", pa.string()),
        ("seed", pa.int64()),
        ("text", pa.string()),
        ("timings_json", pa.string()),
        ("input_tokens", pa.list_(pa.int32())),
        ("output_tokens", pa.list_(pa.int32())),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("duration_in_s", pa.float64()),
        ("duration_s", pa.float64()),
        ("peak_dbfs", pa.float64()),
        ("rms_dbfs", pa.float64()),
        ("clipped_samples", pa.int64()),
        ("qc_profile", pa.string()),
        ("qc_pass", pa.bool_()),
        ("qc_reasons", pa.string()),
        ("qc_json", pa.string()),
        ("instruction", pa.string()),
        ("model_fingerprint", pa.string()),
        ("passes_json", pa.string()),
        ("words_json", pa.string()),
        ("cuts_json", pa.string()),
        ("text_source", pa.string()),
        ("segments_json", pa.string()),
        ("prev_record_sha256", pa.string()),
        ("record_sha256", pa.string()),
        ("audio_ref", pa.string()),  # round audio by reference (added after the rest)
        ("frames", pa.int64()),
        ("audio_flac", pa.binary()),
    ]
)


def _spec(**fields) -> ClipSpec:
    return ClipSpec(3, "c3", "c3.wav", parse_chain("emotion=happy"), text="hello", seed=5, **fields)


def _ended_item(trace=None, words=None) -> WorkItem:
    """An item at the end of round 1 whose output is a short tone."""
    spec = _spec()
    tone = Audio((0.1 * np.sin(np.arange(4800) / 10.0)).astype(np.float32)[:, None], 24000)
    item = WorkItem(spec, round_edits=spec.edits, audio=tone, original=tone, output=tone)
    item.source_sha256 = item.input_sha256 = "a" * 64
    item.trace, item.words = trace, words
    return item


def test_the_round_record_schema_is_the_one_runs_have_always_written():
    assert round_record_schema().equals(RUNS_SCHEMA)


def test_round_schema_places_engine_columns_and_refuses_clashes():
    fill = lambda trace: None  # noqa: E731
    placed = round_schema([RecordColumn("extra", pa.string(), fill, after="edit")])
    assert placed.names[placed.names.index("edit") + 1] == "extra"
    same_twice = [RecordColumn("x", pa.int32(), fill, after="edit")] * 2
    assert round_schema(same_twice).names.count("x") == 1
    with pytest.raises(ValueError, match="'x' .*int64.* clashes with the int32 column"):
        round_schema([*same_twice, RecordColumn("x", pa.int64(), fill, after="edit")])
    with pytest.raises(ValueError, match="'status' .*clashes"):
        round_schema([RecordColumn("status", pa.string(), fill, after="edit")])
    with pytest.raises(ValueError, match="goes after 'nowhere'.*expected one of"):
        round_schema([RecordColumn("y", pa.string(), fill, after="nowhere")])


def test_the_clip_spec_is_fixed_and_the_item_reads_the_row_through_it():
    spec = _spec(target_text="bye", language="en")
    item = WorkItem(spec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.clip_id = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        item.clip_id = "other"  # type: ignore[misc]
    assert (item.row_index, item.clip_id, item.edits, item.seed) == (3, "c3", spec.edits, 5)
    assert (item.target_text, item.language, item.round_seed) == ("bye", "en", 6)
    item.text = "what the round's output says now"  # a round's text is the item's own
    assert item.text != spec.text == "hello"


def test_no_untyped_bag_is_left_on_the_work_item():
    untyped = [f.name for f in dataclasses.fields(WorkItem) if "Any" in str(f.type)]
    assert untyped == []


def test_a_work_item_pickles_with_its_trace_and_words():
    voice = Encoded([1, 2, 3], np.ones((4, 80), np.float32), np.ones(192, np.float32))
    trace = StepAudioTrace(input_tokens=[1, 2, 3], voice=voice)
    item = _ended_item(trace, OutputWords([Word("hi", 0.1, 0.4)], "pocketsphinx"))
    back = pickle.loads(pickle.dumps(item))
    assert back.spec == item.spec and back.words == item.words
    assert isinstance(back.trace, StepAudioTrace) and back.trace.input_tokens == [1, 2, 3]
    np.testing.assert_array_equal(back.trace.voice.feat, voice.feat)


def test_a_record_takes_its_engine_columns_from_the_trace_and_seals_them():
    trace = StepAudioTrace(
        input_tokens=[4, 5],
        output_tokens=[6],
        passes=[PassEntry(1, "emotion=happy", "round_input", 2, "1" * 64, 1, "2" * 64)],
        instruction="make it happy\n",
        model_fingerprint="f" * 16,
    )
    model = RoundRecord.of(_ended_item(trace), "step-audio-editx", "2")
    cuts = SignalTrace(cuts=[Cut(0.5, 0.75, "um", 0.1)])
    signal = RoundRecord.of(_ended_item(cuts, OutputWords([])), "signal", "1.0")
    plain = RoundRecord.of(_ended_item(), "signal", "1.0")
    row = model.to_row()
    assert row["input_tokens"] == [4, 5] and row["output_tokens"] == [6]
    assert json.loads(row["passes_json"]) == [
        {"pass": 1, "edit": "emotion=happy", "input_from": "round_input", "input_codes": 2,
         "input_sha256": "1" * 64, "output_codes": 1, "output_sha256": "2" * 64}
    ]  # fmt: skip
    assert row["instruction"] == "make it happy\n" and row["segments_json"] is None
    assert json.loads(signal.to_row()["cuts_json"])[0]["word"] == "um"
    assert signal.words_json == "[]" and "cuts_json" not in plain.to_row()
    for record in (model, signal, plain):
        record.seal("b" * 64)
    table = table_of([model, signal, plain], round_record_schema())
    assert table.schema.equals(RUNS_SCHEMA)
    for read in table.to_pylist():  # what verify recomputes from the file
        assert record_digest(read) == read["record_sha256"]


def test_the_round_end_records_the_trace_and_keeps_what_the_engine_hands_on():
    place = SegmentPlace(0, 0.0, 0.2, 0.0, 0.2, "c" * 64)
    edited = [EditedSegment(place, 0.0, 0.2, "d" * 64, "hello", "e" * 64)]
    chapter = _ended_item(StepAudioTrace(input_tokens=[1], edited_segments=edited))
    plain = _ended_item(SignalTrace(cuts=[]), OutputWords([], note="no words"))
    MeasureRound().process_batch([chapter, plain])  # QC notes what the word timing could not
    # (both items are the same row: each round end gets a channel of its own)
    end, plain_end = RoundEnd(1, "step-audio-editx", "2"), RoundEnd(1, "step-audio-editx", "2")
    end.process_batch([chapter])
    plain_end.process_batch([plain])
    (record,) = records_of(end, chapter)
    assert json.loads(record.engine_columns["segments_json"])[0]["text"] == "hello"
    assert chapter.trace == StepAudioTrace(previous_segments=edited)
    assert chapter.input_sha256 == record.output_sha256 and chapter.words is None
    assert plain.trace is None and plain.words is None
    assert json.loads(records_of(plain_end, plain)[0].qc_json)["notes"]["words"] == "no words"


def test_a_signal_run_writes_every_engine_column_and_verifies(tmp_path: Path):
    clip = write_clip(tmp_path / "a.wav", 0.5)
    job = JobSpec(
        manifest_uri=write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": clip}]),
        out=str(tmp_path / "runs"),
        run_id="r",
        edits=["loudness=-23"],
        executor="local",
    )
    run_inprocess(job)
    records = ds.dataset(tmp_path / "runs/r/iterations", format="parquet").to_table()
    assert records.schema.remove_metadata().equals(RUNS_SCHEMA)
    assert records.column("input_tokens").to_pylist() == [None]
    report = verify_run(str(tmp_path / "runs"), "r")
    assert report.intact, report.text()


def test_a_chapter_trace_is_its_segments_end_to_end():
    from stepedit_core.engines.stepaudio import segmented

    chapter = _ended_item(StepAudioTrace())
    subs = []
    for k, codes in enumerate(([1, 2], [3])):
        sub = WorkItem(dataclasses.replace(chapter.spec, clip_id=f"c3#{k + 1}"))
        sub.output = Audio(np.zeros((2400 * (k + 1), 1), np.float32), 24000)
        place = SegmentPlace(k, 0.1 * k, 0.1 * (k + 1), 0.1 * k, 0.1 * (k + 1), str(k) * 64)
        entry = PassEntry(1, "emotion=happy", "round_input", len(codes), "1" * 64, 1, "2" * 64)
        sub.trace = StepAudioTrace(
            input_tokens=codes, output_tokens=codes, passes=[entry], segment=place
        )
        sub.trace.instruction, sub.text = "happy\n", f"part {k + 1}"
        subs.append(sub)
    chapter.trace.segment_items = subs
    segmented._fold_traces(chapter, subs, 24000)
    trace = chapter.trace
    assert trace.segment_items is None and trace.input_tokens == [1, 2, 3]
    assert [p.segment for p in trace.passes] == [1, 2] and trace.instruction == "happy\n"
    listed = json.loads(trace.record_values()["segments_json"])
    assert [(s["index"], s["output_start_s"], s["output_end_s"]) for s in listed] == [
        (0, 0.0, 0.1),
        (1, 0.1, 0.3),
    ]
    assert [s["text"] for s in listed] == ["part 1", "part 2"]
    assert json.loads(trace.record_values()["passes_json"])[1]["segment"] == 2
    assert trace.next_round().previous_segments == trace.edited_segments


def test_a_column_of_an_unregistered_engine_is_refused_not_dropped():
    record = RoundRecord.of(_ended_item(), "homemade", "1")
    record.engine_columns = {"homemade_json": "{}"}
    with pytest.raises(ValueError, match=r"row 3, round 1: engine 'homemade' fills \['homemade_"):
        round_table([record], round_record_schema())
    record.engine_columns = {}
    assert round_table([record], round_record_schema()).num_rows == 1


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_each_engine_trace_is_a_dataclass_whose_fresh_columns_are_null(engine):
    trace_type = engine_class(engine).trace_type
    assert dataclasses.is_dataclass(trace_type) and trace_type.COLUMNS
    fresh = pickle.loads(pickle.dumps(trace_type()))
    assert fresh.record_values() == {c.name: None for c in trace_type.COLUMNS}
    assert fresh.next_round() is None
