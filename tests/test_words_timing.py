"""The word-timing stage: the words of every round's output in its record, the fillers edit's own
alignment reused past its cuts, the stage's place in validate and stage environments, and how
audit and the review page show words and cuts."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_words_pipeline import whisper_folder  # noqa: F401 - the session fixture
from work_items import records_of, row_item

from stepedit_core.audit import clip_history, format_history
from stepedit_core.engines import EngineOptions, make_engine
from stepedit_core.engines.signal import vad
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import parse_edit
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.rounds import RoundEnd, build_stages, model_stage_names
from stepedit_core.quality.round_qc import MeasureRound
from stepedit_core.report.cuts import words_note
from stepedit_core.signal import gain
from stepedit_core.words import fillers
from stepedit_core.words.align import shared_aligner, tokens
from stepedit_core.words.edit import remove_fillers
from stepedit_core.words.fillers import apply_cuts, pauses, plan_cuts, words_after_cuts
from stepedit_core.words.gate import measure_wer
from stepedit_core.words.summary import cuts_line, words_line
from stepedit_core.words.timing import OutputWords, Word, words_from_json
from stepedit_core.words.timing_stage import TimeWords, word_timing_mode

from conftest import run_inprocess, write_clip, write_manifest

CLIPS_DIR = Path(__file__).resolve().parent / "words_clips"
CLIPS = {c["clip_id"]: c for c in json.loads((CLIPS_DIR / "clips.json").read_text())}


def load(clip_id: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    samples, rate = sf.read(CLIPS_DIR / CLIPS[clip_id]["file"], dtype="float32", always_2d=True)
    return samples, rate


def output_item(clip_id: str, text: str | None, edit: str = "denoise") -> WorkItem:
    """An item at the end of a round's engine stages: its output is the clip itself."""
    samples, rate = load(clip_id)
    spec = parse_edit(edit)
    item = row_item(0, clip_id, "x.wav", (spec,), text=text, language="en", round_edits=(spec,))
    item.audio = item.output = Audio(samples, rate)
    return item


def test_crossfade_is_one_shared_equal_power_primitive():
    assert vad.crossfade is gain.crossfade and fillers.crossfade is gain.crossfade
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20000, 2)), rng.standard_normal((20000, 2))
    out = gain.crossfade(a, b)
    assert out.dtype == np.float32 and out.shape == a.shape
    assert np.allclose(out[0], a[0], atol=1e-3) and np.allclose(out[-1], b[-1], atol=1e-3)
    middle = out[9000:11000]  # a linear fade would dip to half the power here
    assert np.mean(middle**2) == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize(
    "gaps",
    [(0.2, 0.35, 0.3, 0.4), (0.05, 0.05, 0.04, 0.06)],
    ids=["long-pauses", "short-pauses-room-tone"],
)
def test_words_after_cuts_follow_the_audio_the_cuts_leave(gaps):
    before_um, after_um, before_uh, after_uh = gaps  # pauses around each filler
    so = Word("so", 0.2, 0.5)
    um = Word("um", so.end + before_um, so.end + before_um + 0.25, 0.9, True)
    go = Word("go", um.end + after_um, um.end + after_um + 0.3)
    uh = Word("uh", go.end + before_uh, go.end + before_uh + 0.2, 0.9, True)
    now = Word("now", uh.end + after_uh, uh.end + after_uh + 0.3)
    words = [so, um, go, uh, now]
    rate, duration = 16000, now.end + 0.4
    rng = np.random.default_rng(5)
    audio = (rng.standard_normal((int(duration * rate), 1)) * 0.001).astype(np.float32)
    burst = slice(round(go.start * rate), round(go.end * rate))  # a loud tone where "go" is
    audio[burst, 0] += 0.5 * np.sin(np.arange(burst.stop - burst.start) * 0.2)
    cuts = plan_cuts(words, ("um", "uh"), duration)
    assert [c.word for c in cuts] == ["um", "uh"]
    assert all(c.room_tone_s > 0 for c in cuts) == (max(gaps) < 0.15)
    out = apply_cuts(audio, rate, cuts, pauses(words, duration))
    moved = words_after_cuts(words, cuts, audio.shape[0], rate)
    assert [w.word for w in moved] == ["so", "go", "now"]
    assert moved[0] == words[0]  # nothing before the first cut moves
    for new, old in zip(moved, [words[0], words[2], words[4]], strict=True):
        assert new.duration == pytest.approx(old.duration, abs=0.002)
    loud = np.flatnonzero(np.abs(out[:, 0]) > 0.1)  # where the tone landed in the output
    assert loud[0] / rate == pytest.approx(moved[1].start, abs=0.005)
    assert loud[-1] / rate == pytest.approx(moved[1].end, abs=0.005)
    # after the last cut the audio is copied as it was: same distance to the end
    assert out.shape[0] / rate - moved[-1].end == pytest.approx(duration - now.end, abs=0.002)


@pytest.mark.parametrize("clip_id", [c for c, clip in CLIPS.items() if clip["filler_spans"]])
def test_the_fillers_alignment_moved_past_its_cuts_matches_aligning_the_output(clip_id):
    clip = CLIPS[clip_id]
    samples, rate = load(clip_id)
    result = remove_fillers(parse_edit("fillers"), samples, rate, clip["text"], "en")
    assert result.cuts
    moved = words_after_cuts(result.timings.words, result.cuts, len(samples), rate)
    again = shared_aligner().align(result.samples, rate, clip["text"])
    script_moved = [w for w in moved if not w.filler]
    script_again = [w for w in again if not w.filler]
    assert [w.word for w in script_moved] == [w.word for w in script_again] == tokens(clip["text"])
    starts = np.array([w.start for w in script_moved]) - [w.start for w in script_again]
    # measured: the same start to 40 ms at most (pocketsphinx's frames are 10 ms)
    assert np.median(np.abs(starts)) <= 0.03 and np.max(np.abs(starts)) <= 0.1, starts


def test_the_stage_times_a_round_output_by_aligning_its_text():
    text = CLIPS["plain_01"]["text"]
    item = output_item("plain_01", text)
    TimeWords().process_batch([item])
    assert not item.failed
    words = words_from_json(item.words.to_json())
    assert [w.word for w in words if not w.filler] == tokens(text)
    assert item.words.backend == "pocketsphinx"
    assert all(w.end > w.start for w in words)


def test_the_stage_leaves_timed_outputs_alone_and_never_fails_a_round():
    timed = output_item("fill_01", "anything")
    timed.words = OutputWords([])  # timed by the fillers edit already
    bare = output_item("fill_01", None)  # no text, no ASR model: can not be timed
    idle = output_item("plain_01", CLIPS["plain_01"]["text"])
    idle.round_edits = ()  # nothing ran for it in this round
    TimeWords().process_batch([timed, bare, idle])
    assert timed.words == OutputWords([])
    assert not bare.failed and bare.words.words is None
    assert "no_word_timings" in bare.words.note
    assert idle.words is None
    # the round's record says why it has no words, in its QC notes
    MeasureRound().process_batch([bare])
    end = RoundEnd(1, "signal", "1")
    end.process_batch([bare])
    (record,) = records_of(end, bare)
    assert record.words_json is None
    assert "no_word_timings" in json.loads(record.qc_json)["notes"]["words"]


def test_asr_mode_needs_a_model_and_uses_the_asr_word_times(whisper_folder):  # noqa: F811
    with pytest.raises(ValueError, match="--asr-models"):
        TimeWords("asr")
    item = output_item("plain_01", CLIPS["plain_01"]["text"])
    TimeWords("asr", whisper_folder).process_batch([item])
    assert item.words.backend == "faster-whisper"
    assert "lighthouse" in item.words.transcript.lower()
    heard = [w.word.strip(".,!?").lower() for w in item.words.words]
    expected = tokens(CLIPS["plain_01"]["text"])
    assert len(set(heard) & set(expected)) >= 0.7 * len(set(expected))


def test_when_word_timings_are_on_and_where_the_stage_runs(tmp_path, whisper_folder):  # noqa: F811
    fillers_edit, denoise = parse_edit("fillers"), parse_edit("denoise")
    assert word_timing_mode(None, None, (denoise,)) is None
    assert word_timing_mode(None, None, (fillers_edit,)) == "auto"
    assert word_timing_mode(None, whisper_folder, (denoise,)) == "auto"
    assert word_timing_mode("asr", whisper_folder, (denoise,)) == "asr"
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": "a.flac"}])
    with pytest.raises(ValueError, match="--word-timings asr needs --asr-models"):
        JobSpec(manifest_uri=manifest, out=str(tmp_path), run_id="x", word_timings="asr")
    job = JobSpec(manifest_uri=manifest, out=str(tmp_path), run_id="x", edits=("fillers",))
    assert job.engine_options().word_timings == "auto"
    plain = make_engine("signal", EngineOptions())
    assert model_stage_names(plain) == ["signal_edit", "qc"]
    engine = make_engine("signal", EngineOptions(asr_models=whisper_folder, word_timings="auto"))
    assert model_stage_names(engine) == ["transcribe", "signal_edit", "word_timing", "qc"]
    names = [s.name for s in build_stages(engine, 2, with_clone_round=False)]
    for k in (1, 2):  # after the engine's stages, before the round's QC and record
        at = names.index(f"round_end_{k}")
        assert names[at - 3 : at] == ["signal_edit", "word_timing", "qc"]


def test_validate_lists_the_words_stages_and_takes_their_environments(
    tmp_path,
    capsys,
    whisper_folder,  # noqa: F811
):
    from stepedit_flows.cli import main

    clip = write_clip(tmp_path / "a.flac")
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": clip}])
    python = sys.executable
    code = main(
        ["validate", manifest, "--edit", "fillers", "--asr-models", whisper_folder,
         "--stage-python", f"transcribe={python}", "--stage-python", f"word_timing={python}"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"stage transcribe: interpreter {python}" in out
    assert f"stage word_timing: interpreter {python}" in out
    assert "stage signal_edit: the driver's interpreter" in out
    # a run that asks for the ASR's word times without an ASR model is refused before any work
    code = main(["run", manifest, "--out", str(tmp_path / "runs"), "--run-id", "x",
                 "--edit", "denoise", "--word-timings", "asr"])  # fmt: skip
    assert code == 2
    assert "error: --word-timings asr needs --asr-models" in capsys.readouterr().err
    # without an ASR model there is no transcribe stage to give an environment to
    code = main(
        ["validate", manifest, "--edit", "fillers", "--stage-python", f"transcribe={python}"]
    )
    assert code == 2
    assert "no stage 'transcribe'" in capsys.readouterr().err


def test_every_round_record_has_its_output_words_and_audit_and_report_show_them(tmp_path):
    rows = [
        {"clip_id": "fill_02", "text": CLIPS["fill_02"]["text"], "language": "en"},
        {"clip_id": "plain_01", "text": CLIPS["plain_01"]["text"], "edit": "speed=1.25"},
    ]
    for row in rows:
        shutil.copy(CLIPS_DIR / CLIPS[row["clip_id"]]["file"], tmp_path)
        row["audio_uri"] = str(tmp_path / CLIPS[row["clip_id"]]["file"])
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = str(tmp_path / "runs")
    job = JobSpec(manifest_uri=manifest, out=out, run_id="w", edits=("fillers",), executor="local")
    run_inprocess(job)
    records = pq.read_table(tmp_path / "runs" / "w" / "iterations").to_pylist()
    by_clip = {r["clip_id"]: r for r in records}
    fill, fast = by_clip["fill_02"], by_clip["plain_01"]
    # the fillers round: the edit's own alignment, moved onto its output (not timed again)
    assert "word_timing" not in json.loads(fill["timings_json"])
    fill_words = words_from_json(fill["words_json"])
    assert [w.word for w in fill_words if not w.filler] == tokens(CLIPS["fill_02"]["text"])
    assert max(w.end for w in fill_words) <= fill["duration_s"]
    # the speed round: its output timed by the stage, on the faster timeline
    assert "word_timing" in json.loads(fast["timings_json"])
    fast_words = words_from_json(fast["words_json"])
    assert [w.word for w in fast_words if not w.filler] == tokens(CLIPS["plain_01"]["text"])
    last_end = CLIPS["plain_01"]["script_spans"][-1][1]
    assert max(w.end for w in fast_words) == pytest.approx(last_end / 1.25, abs=0.1)
    assert fast["cuts_json"] is None
    history = format_history(clip_history(out, "w", "fill_02"))
    assert f"words {words_line(fill['words_json'])}" in history
    assert f"cuts {cuts_line(fill['cuts_json'])}" in history
    assert "cuts " not in format_history(clip_history(out, "w", "plain_01"))
    from stepedit_flows.cli import main

    assert main(["report", str(tmp_path / "runs" / "w")]) == 0  # `stepedit report` rebuilds it
    page = (tmp_path / "runs" / "w" / "report" / "index.html").read_text()
    assert page.count("words: ") == 2 and page.count('class="cuts"') == 1
    first = fill_words[0]
    assert f"{first.word} {first.start:.2f}" in page  # the timed words open under the line


def test_word_and_cut_lines_are_short():
    words = json.dumps(
        [
            {"word": "so", "start": 0.1, "end": 0.3, "confidence": 0.9, "filler": False},
            {"word": "um", "start": 0.5, "end": 0.7, "confidence": 0.2, "filler": True},
            {"word": "go", "start": 0.9, "end": 1.2, "confidence": 0.9, "filler": False},
        ]
    )
    assert words_line(words) == "2 words (1 filler kept), 0.10-1.20 s"
    assert words_line(None) is None and words_line("[]") == "no words found"
    cuts = [{"start_s": i, "end_s": i + 0.5, "word": "um", "room_tone_s": 0} for i in range(10)]
    line = cuts_line(json.dumps(cuts))
    assert line.startswith("10 cuts: um 0.00-0.50 s, ") and line.endswith("... and 2 more")
    assert cuts_line("[]") == "no cuts" and cuts_line(None) is None
    note = words_note(words)
    assert note.startswith('<details class="sub words"><summary>words: 2 words (1 filler')
    assert "so 0.10, [um] 0.50, go 0.90</details>" in note
    assert words_note(None) == ""
    many = json.dumps([{"word": "a", "start": i, "end": i + 0.5} for i in range(250)])
    assert "... and 50 more" in words_note(many)


def test_the_wer_gate_reuses_the_transcript_the_stage_made():
    class NoAsr:
        def transcribe(self, *args):
            raise AssertionError("the output was transcribed a second time")

    item = output_item("plain_01", "the cat sat on the mat")
    item.words = OutputWords([], transcript="The cat sat on a mat.")
    assert measure_wer(item, NoAsr()) == (pytest.approx(1 / 6, abs=1e-4), None)


def test_asked_for_word_timings_name_incremental_results(tmp_path, whisper_folder):  # noqa: F811
    from stepedit_core.lifecycle.incremental import key_settings

    engine = make_engine("signal", EngineOptions())
    base = {"manifest_uri": "m.parquet", "out": str(tmp_path), "run_id": "r", "edits": ("denoise",)}
    plain = JobSpec(**base)
    timed = JobSpec(**base, word_timings="auto")
    by_asr = JobSpec(**base, word_timings="asr", asr_models=whisper_folder)
    with_asr = JobSpec(**base, asr_models=whisper_folder)
    keys = [key_settings(job, engine) for job in (plain, timed, by_asr, with_asr)]
    assert len(set(keys)) == 4
    assert (
        "word_timings" not in plain.fingerprint() and timed.fingerprint()["word_timings"] == "auto"
    )
