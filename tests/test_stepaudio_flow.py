"""Step-Audio-EditX through the command line: prompts, validate, and a full three-round run of
the Prefect flow on Ray with the stand-in model folders and upstream checkout."""

import importlib.util

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stepedit_flows.cli import main

from conftest import write_clip, write_manifest
from stepaudio_standins import shared_standins


def test_prompt_prints_exactly_the_instruction(capsys):
    code = main(
        [
            "prompt",
            "--engine",
            "step-audio-editx",
            "--edit",
            "emotion=happy",
            "--text",
            " Hello there. ",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out == (
        "Make the following audio more happy. The text corresponding to the audio is: "
        "Hello there.\n"
    )


def test_prompt_for_style_remove_and_paralinguistic(capsys):
    assert main(["prompt", "--edit", "style=remove", "--text", "Hi."]) == 0
    assert capsys.readouterr().out == (
        "Remove any speaking styles in the following audio and the reference text is: Hi.\n"
    )
    assert (
        main(
            [
                "prompt",
                "--edit",
                "paralinguistic",
                "--text",
                "Oh no.",
                "--target-text",
                "Oh [Sigh] no.",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == (
        "Add some non-verbal sounds to make the audio more natural, the new text is : "
        "Oh [Sigh] no.\n  The text corresponding to the audio is: Oh no.\n"
    )


def test_prompt_with_unknown_option_names_valid_ones(capsys):
    assert main(["prompt", "--edit", "emotion=ecstatic", "--text", "x"]) == 2
    err = capsys.readouterr().err
    assert "'ecstatic'" in err and "admiration" in err


def test_validate_names_missing_model_files(tmp_path, capsys):
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": "a.wav", "text": "hi"}]
    )
    (tmp_path / "models" / "Step-Audio-EditX").mkdir(parents=True)
    code = main(
        [
            "validate",
            manifest,
            "--engine",
            "step-audio-editx",
            "--edit",
            "emotion=sad",
            "--models",
            str(tmp_path / "models"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Step-Audio-Tokenizer/linguistic_tokenizer.npy" in err
    assert "Step-Audio-EditX/config.json" in err


def test_vllm_backend_is_refused_when_vllm_is_absent(tmp_path, capsys, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a),
    )
    models, src = shared_standins()
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": "a.wav", "text": "hi"}]
    )
    options = [
        "--engine",
        "step-audio-editx",
        "--models",
        str(models),
        "--stepaudio-src",
        str(src),
        "--edit",
        "emotion=sad",
        "--llm-backend",
        "vllm",
    ]
    code = main(["run", manifest, "--out", str(tmp_path / "o"), "--run-id", "v", *options])
    assert code == 2 and "vLLM is not installed" in capsys.readouterr().err
    # validate builds the engine as run does: the same options are refused the same way
    code = main(["validate", manifest, *options])
    assert code == 2 and "vLLM is not installed" in capsys.readouterr().err


@pytest.mark.slow
def test_three_rounds_through_prefect_and_ray(tmp_path, prefect_server, ray_cluster, capsys):
    models, src = shared_standins()
    clips = tmp_path / "clips"
    clips.mkdir()
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [
            {"clip_id": "a", "audio_uri": write_clip(clips / "a.wav", 1.0), "text": "One line."},
            {
                "clip_id": "b",
                "audio_uri": write_clip(clips / "b.wav", 0.8, rate=8000, channels=2),
                "text": "Another line.",
            },
            {
                "clip_id": "c",
                "audio_uri": write_clip(clips / "c.wav", 0.8),
                "text": "Prompt text.",
                "edit": "clone;emotion=sad",
                "target_text": "Something new to say.",
            },
            {"clip_id": "d", "audio_uri": write_clip(clips / "d.wav", 0.5)},  # no transcript
        ],
    )
    code = main(
        [
            "run",
            manifest,
            "--out",
            str(tmp_path / "runs"),
            "--run-id",
            "emo-01",
            "--engine",
            "step-audio-editx",
            "--models",
            str(models),
            "--stepaudio-src",
            str(src),
            "--edit",
            "emotion=excited",
            "--iterations",
            "3",
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out  # finished, one row failed
    rows = pq.read_table(tmp_path / "runs/emo-01/manifest.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed"]
    assert rows[3]["error_code"] == "missing_text"
    assert [r["iterations_done"] for r in rows[:3]] == [3, 3, 4]  # clone adds round 0
    audio, rate = sf.read(rows[1]["output_uri"], always_2d=True)
    assert rate == 24000 and audio.shape[1] == 1  # the model writes 24 kHz mono

    records = ds.dataset(tmp_path / "runs/emo-01/iterations", format="parquet").to_table()
    by_clip = {}
    for r in records.to_pylist():
        by_clip.setdefault(r["clip_id"], {})[r["iteration"]] = r
    assert sorted(by_clip["a"]) == [1, 2, 3] and sorted(by_clip["c"]) == [0, 1, 2, 3]
    assert by_clip["c"][0]["edit"] == "clone" and by_clip["c"][1]["edit"] == "emotion=sad"
    for clip in ("a", "b", "c"):
        rounds = by_clip[clip]
        for k, record in rounds.items():
            assert record["status"] == "ok" and record["engine"] == "step-audio-editx"
            assert record["output_tokens"] and all(0 <= t < 5120 for t in record["output_tokens"])
            if k > 0:
                assert record["input_tokens"]
            if k - 1 in rounds:  # each round edits the previous round's output
                assert record["input_sha256"] == rounds[k - 1]["output_sha256"]
