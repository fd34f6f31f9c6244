"""`stepedit eval run`: the benchmark protocol's jobs, and the whole command end to end on the
engine's stand-ins and the test judge server."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from judge_server import KEY, JudgeServer

from stepedit_core.foundation.failures import RunRefused
from stepedit_core.judges.protocol import protocol_jobs, untagged
from stepedit_flows.cli import main

from conftest import write_clip, write_manifest
from stepaudio_standins import shared_standins


def _benchmark(tmp_path, other: bool = False) -> str:
    prompt = write_clip(tmp_path / "spk.wav", seconds=1.0)
    base = {"audio_uri": prompt, "text": "Prompt words.", "language": "en", "speaker": "s1"}
    rows = [
        dict(base, clip_id="e1", benchmark_id="x-idx", target_text="Great news today.",
             eval_task="emotion", eval_label="happy"),
        dict(base, clip_id="s1", benchmark_id="x-idx", target_text="Once upon a time.",
             eval_task="style", eval_label="whisper"),
        dict(base, clip_id="p1", benchmark_id="y", target_text="Well [Laughter] that is it.",
             eval_task="paralingustic", eval_label="[Laughter]"),
    ]  # fmt: skip
    if other:
        for row in rows:
            row["other_tts"] = write_clip(tmp_path / f"o-{row['clip_id']}.wav", seconds=0.8)
    return write_manifest(tmp_path / "bench.parquet", rows)


def test_protocol_clones_then_edits_and_gives_paralinguistic_rows_one_round(tmp_path):
    jobs = protocol_jobs(_benchmark(tmp_path), str(tmp_path / "runs"), "ev", 3)
    assert [(j.run_id, j.iterations, j.rows) for j in jobs] == [
        ("ev", 3, 2),
        ("ev-paralinguistic", 1, 1),
    ]
    main_rows = pq.read_table(jobs[0].manifest_uri).to_pylist()
    assert [r["edit"] for r in main_rows] == ["clone;emotion=happy", "clone;style=whisper"]
    (para,) = pq.read_table(jobs[1].manifest_uri).to_pylist()
    assert para["edit"] == "clone;paralinguistic" and para["eval_task"] == "paralinguistic"


def test_post_processing_starts_from_the_other_systems_audio(tmp_path):
    jobs = protocol_jobs(_benchmark(tmp_path, other=True), str(tmp_path / "r"), "pp", 2,
                         post_process="other_tts")  # fmt: skip
    (para,) = pq.read_table(jobs[1].manifest_uri).to_pylist()
    assert para["audio_uri"].endswith("o-p1.wav") and para["edit"] == "paralinguistic"
    assert para["text"] == "Well that is it."
    with pytest.raises(RunRefused, match="no column 'nope'"):
        protocol_jobs(_benchmark(tmp_path), str(tmp_path / "r"), "pp", 2, post_process="nope")


def test_unusable_rows_are_refused_naming_row_and_field(tmp_path):
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"clip_id": "a", "audio_uri": "a.wav", "target_text": "Hi.", "eval_task": "mood",
          "eval_label": "happy"}],
    )  # fmt: skip
    with pytest.raises(RunRefused, match="row 0: field 'eval_task' is 'mood'"):
        protocol_jobs(manifest, str(tmp_path / "r"), "x", 1)


def test_untagged_leaves_no_stray_spaces():
    assert untagged("Great [Laughter] , done [Sigh].") == "Great , done ."
    assert untagged("[Breathing]Hello  there") == "Hello there"


@pytest.mark.slow
def test_eval_run_end_to_end_on_standins(tmp_path, prefect_server, monkeypatch, capsys):
    monkeypatch.setenv("EVAL_JUDGE_KEY", KEY)
    server = JudgeServer()
    url = server.start()
    models, src = shared_standins()
    out = tmp_path / "runs"
    args = ["eval", "run", _benchmark(tmp_path), "--out", str(out), "--run-id", "ev",
            "--models", str(models), "--stepaudio-src", str(src), "--iterations", "2",
            "--executor", "local", "--quiet", "--judge", "openai", "--endpoint", url + "/v1",
            "--model", "judge-m", "--key-env", "EVAL_JUDGE_KEY"]  # fmt: skip
    try:
        assert main(args) == 0
        acc = pq.read_table(out / "ev" / "eval" / "accuracy.parquet").to_pylist()
        assert sorted({(r["iteration"], r["task"]) for r in acc}) == [
            (0, "emotion"), (0, "style"), (1, "emotion"), (1, "style"), (2, "emotion"),
            (2, "style"),
        ]  # fmt: skip
        para = pq.read_table(out / "ev-paralinguistic" / "eval" / "accuracy.parquet")
        assert sorted(para.column("iteration").to_pylist()) == [0, 1]
        assert all(r["clips"] == 1 for r in acc)
        records = pq.read_table(out / "ev" / "iterations").to_pylist()
        assert {r["iteration"] for r in records} == {0, 1, 2}
        assert {r["edit"] for r in records if r["iteration"] == 0} == {"clone"}
        asked = server.answered
        assert main(args) == 0 and server.answered == asked  # nothing asked twice
    finally:
        server.stop()
    printed = capsys.readouterr().out
    assert "| emotion | en | 0 | 1 |" in printed


def test_prompt_fixed_rounds_after_a_clone_take_the_round_zero_audio_as_voice_prompt():
    import numpy as np
    from work_items import row_item

    from stepedit_core.foundation.audio import Audio
    from stepedit_core.foundation.edits import parse_chain
    from stepedit_core.lifecycle.rounds import RoundEnd, StartRound

    speaker = Audio(np.full(2400, 0.1, np.float32), 24000)
    cloned = Audio(np.full(4800, 0.2, np.float32), 24000)
    item = row_item(0, "a", "a.wav", parse_chain("clone;emotion=happy"), text="t",
                    target_text="new", audio=speaker, original=speaker)  # fmt: skip
    item.source_sha256 = "src"
    StartRound(0, "fixed").process_batch([item])
    assert item.prompt is speaker
    item.output = cloned
    RoundEnd(0, "step-audio-editx", "v").process_batch([item])
    StartRound(1, "fixed").process_batch([item])
    assert item.prompt is cloned and item.audio is cloned
