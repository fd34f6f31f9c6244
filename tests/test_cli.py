"""The command line: refusals exit 2 before any work, listings, validate."""

import json

import pytest

from stepedit_flows.cli import main

from conftest import write_clip, write_manifest


@pytest.fixture()
def manifest(tmp_path):
    return write_manifest(
        tmp_path / "m.parquet",
        [
            {"clip_id": "a", "audio_uri": write_clip(tmp_path / "a.wav", 0.5), "text": "hi"},
            {"clip_id": "b", "audio_uri": str(tmp_path / "b.wav"), "edit": "emotion=sad"},
        ],
    )


def run_cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def run_args(manifest, out, *extra):
    """`stepedit run` with a denoise edit and the given extra options."""
    return ["run", str(manifest), "--out", str(out), "--run-id", "x", "--edit", "denoise", *extra]


def test_missing_required_column_refuses(tmp_path, capsys):
    bad = write_manifest(tmp_path / "bad.parquet", [{"clip_id": "a"}])
    code, _, err = run_cli(run_args(bad, tmp_path / "o", "--executor", "local"), capsys)
    assert code == 2 and "audio_uri" in err
    assert not (tmp_path / "o").exists()  # nothing was started


def test_unknown_engine_refuses(manifest, tmp_path, capsys):
    code, _, err = run_cli(run_args(manifest, tmp_path, "--engine", "nope"), capsys)
    assert code == 2 and "unknown engine 'nope'" in err and "signal" in err


def test_unknown_edit_refuses(manifest, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", manifest, "--out", str(tmp_path), "--run-id", "x", "--edit", "emotion=meh"])
    assert exit_info.value.code == 2
    assert "valid options" in capsys.readouterr().err


def test_bad_iterations_refuses(manifest, tmp_path, capsys):
    code, _, err = run_cli(run_args(manifest, tmp_path, "--iterations", "9"), capsys)
    assert code == 2 and "iterations" in err


def test_engines_json_lists_stages_and_edits(capsys):
    code, out, _ = run_cli(["engines", "--json"], capsys)
    engines = {e["name"]: e for e in json.loads(out)}
    assert code == 0 and set(engines) == {"signal", "step-audio-editx"}
    assert "loudness" in engines["signal"]["edits"]
    assert [s["name"] for s in engines["step-audio-editx"]["stages"]] == [
        "tokenize",
        "edit",
        "decode",
    ]


def test_validate_counts_rows_without_running(manifest, tmp_path, capsys):
    code, out, err = run_cli(["validate", manifest, "--edit", "denoise"], capsys)
    assert code == 0
    assert "1 row(s) ready" in out and "unsupported_edit" in out
    assert "row 1" in err and "step-audio-editx" in err


def test_prompt_on_signal_engine_refuses(capsys):
    code, _, err = run_cli(["prompt", "--engine", "signal", "--edit", "denoise"], capsys)
    assert code == 2 and "no instruction text" in err


def test_job_edit_the_engine_can_not_run_refuses_up_front(manifest, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["run", manifest, "--out", str(out), "--run-id", "x", "--edit", "emotion=happy"]
    code, _, err = run_cli([*args, "--executor", "local"], capsys)
    assert code == 2
    assert "emotion=happy" in err and "supported by engine: step-audio-editx" in err
    assert not (out / "x" / "manifest.parquet").exists()  # nothing ran


def test_output_that_can_not_be_written_refuses_in_one_line(manifest, tmp_path, capsys):
    code, out, err = run_cli(
        run_args(manifest, "/proc/stepedit-out", "--executor", "local"), capsys
    )
    assert code == 2
    assert err.startswith("stepedit: error: output /proc/stepedit-out") and "written" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_help_lists_the_edit_table(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "loudness: ebu, ebu-r128, atsc, netflix, acx" in help_text
    assert "clone: none [step-audio-editx]" in help_text
