"""What a scheduler sees: exit statuses 0 / 1 / 2 / 3, a job whose every row would be refused
for one reason refused whole with what would fix it, `run --help` saying so."""

import io
import os

import pytest

from stepedit_core.catalog.access import AllowedRoots, covering_roots
from stepedit_core.engines import make_engine
from stepedit_core.lifecycle.planning import refusal_of_every_row
from stepedit_flows import cli
from stepedit_flows.cli import build_parser, exit_status, main

from conftest import put_clip, write_clip, write_manifest


def usual_layout(root) -> tuple[str, str]:
    """ROOT/catalog/manifest.parquet with its audio in ROOT/audio/: (manifest, audio folder)."""
    (root / "catalog").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = [
        {"clip_id": name, "audio_uri": write_clip(root / "audio" / f"{name}.wav", 0.5)}
        for name in ("a", "b")
    ]
    return write_manifest(root / "catalog" / "manifest.parquet", rows), str(root / "audio")


def test_every_row_outside_the_manifest_folder_refuses_naming_the_root(tmp_path, capsys):
    manifest, audio = usual_layout(tmp_path / "cat")
    out = tmp_path / "runs"
    args = ["run", manifest, "--out", str(out), "--run-id", "x", "--edit", "denoise"]
    assert main([*args, "--executor", "local"]) == 2
    err = capsys.readouterr().err
    assert "every row (2) would be refused at plan time as uri_not_allowed" in err
    assert "row 0:" in err and f"--allow-root {os.path.realpath(audio)}" in err
    assert not list((out / "x").iterdir())  # nothing started (the write probe came and went)
    # the root it names is enough
    fixed = ["validate", manifest, "--edit", "denoise", "--allow-root", os.path.realpath(audio)]
    assert main(fixed) == 0
    assert "2 row(s) ready" in capsys.readouterr().out


def test_every_row_outside_the_manifest_prefix_on_s3_names_the_bucket_prefix(s3, capsys):
    for name in ("a", "b"):
        put_clip(s3, f"catalog/usual/audio/{name}.flac", 0.5)
    rows = [
        {"clip_id": name, "audio_uri": f"s3://catalog/usual/audio/{name}.flac"}
        for name in ("a", "b")
    ]
    local = io.BytesIO()
    write_manifest(local, rows)  # type: ignore[arg-type]
    s3.pipe("catalog/usual/catalog/manifest.parquet", local.getvalue())
    manifest = "s3://catalog/usual/catalog/manifest.parquet"
    code = main(["validate", manifest, "--edit", "denoise"])
    err = capsys.readouterr().err
    assert code == 2 and "as uri_not_allowed" in err
    assert err.rstrip().endswith("run again with --allow-root s3://catalog/usual/audio")


def test_rows_refused_for_different_reasons_or_one_good_row_are_not_refused_whole(tmp_path):
    engine = make_engine("signal")
    outside = write_clip(tmp_path / "outside.wav", 0.5)
    (tmp_path / "cat").mkdir()
    inside = write_clip(tmp_path / "cat" / "in.wav", 0.5)

    def refusal(rows: list[dict]) -> str | None:
        manifest = write_manifest(tmp_path / "cat" / "m.parquet", rows)
        roots = AllowedRoots.for_manifest(manifest)
        return refusal_of_every_row(manifest, (), engine, roots)

    far = {"clip_id": "a", "audio_uri": outside, "edit": "denoise"}
    assert refusal([far, {"clip_id": "b", "audio_uri": inside}]) is None  # + missing_edit
    assert refusal([far, {"clip_id": "b", "audio_uri": inside, "edit": "denoise"}]) is None
    only_missing_edits = refusal([{"clip_id": "a", "audio_uri": inside}])
    assert only_missing_edits is not None
    assert "every row (1) would be refused at plan time as missing_edit" in only_missing_edits
    assert "--edit" in only_missing_edits  # the row's own message says what would fix it


def test_covering_roots_is_the_common_folder_else_one_per_bucket_or_top_folder():
    assert covering_roots(["s3://cat/audio/x/1.wav", "s3://cat/audio/y/2.wav"]) == [
        "s3://cat/audio"
    ]
    assert covering_roots(["s3://one/a/1.wav", "s3://two/b/2.wav"]) == ["s3://one", "s3://two"]
    assert covering_roots(["/nonexistent-x/a/1.wav", "/nonexistent-y/2.wav"]) == [
        "/nonexistent-x",
        "/nonexistent-y",
    ]
    assert covering_roots(["/nonexistent-x/a/1.wav", "s3://cat/a/2.wav"]) == [
        "/nonexistent-x/a",
        "s3://cat/a",
    ]
    assert covering_roots(["simplecache::s3://cat/a.wav"]) == []  # no root allows it


def test_exit_status_of_a_finished_run():
    assert exit_status({"counts": {"rows": 3, "ok": 3, "failed": 0}}) == 0
    assert exit_status({"counts": {"rows": 3, "ok": 1, "failed": 2}}) == 1


def test_a_crash_exits_3_with_its_traceback(monkeypatch, capsys):
    def crash(args):
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.COMMANDS, "engines", crash)
    assert main(["engines"]) == 3
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err and "crashed" in err


def test_run_help_lists_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for line in ("0    the run finished and every row is ok", "1    the run finished and some"):
        assert line in text
    assert "2    refused before any work" in text and "3    crashed" in text


def test_report_draws_media_as_runs_do_by_default():
    parser = build_parser()
    report = parser.parse_args(["report", "runs/x"])
    run = parser.parse_args(["run", "m.parquet", "--out", "o", "--run-id", "x"])
    assert report.media == run.report == "index"
