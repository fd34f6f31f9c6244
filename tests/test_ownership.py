"""A run writes into and clears only its own folder: a folder that is not a run, or a run folder
holding the manifest or source audio, is refused (exit 2) with nothing touched; `--overwrite`
removes only what the run wrote; folders of runs that predate the marker are still runs."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.ownership import MARKER
from stepedit_flows.cli import main

from conftest import put_clip, run_inprocess, write_clip, write_manifest


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def cli(manifest: str, out: str, run_id: str, *extra: str) -> list[str]:
    return [
        "run", manifest, "--out", out, "--run-id", run_id, "--edit", "loudness=-23",
        "--executor", "local", "--quiet", *extra,
    ]  # fmt: skip


def catalog(folder: Path, clips: int = 2) -> str:
    (folder / "audio").mkdir(parents=True)
    rows = [
        {"clip_id": f"c{i}", "audio_uri": write_clip(folder / "audio" / f"c{i}.wav", 0.5)}
        for i in range(clips)
    ]
    return write_manifest(folder / "manifest.parquet", rows)


@pytest.mark.parametrize("overwrite", [True, False])
def test_the_catalogs_own_folder_is_refused_and_left_as_it_was(tmp_path, capsys, overwrite):
    manifest = catalog(tmp_path / "data")
    before = tree(tmp_path)
    extra = ("--overwrite",) if overwrite else ()
    code = main(cli(manifest, str(tmp_path), "data", *extra))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "not a stepedit run folder" in err and str(tmp_path / "data") in err
    assert tree(tmp_path) == before


def test_a_run_folder_holding_the_manifest_is_refused(tmp_path, capsys):
    """An empty-looking run (legacy sign present) that holds the manifest is still refused."""
    manifest = catalog(tmp_path / "data")
    (tmp_path / "data" / "run.json").write_text("{}")  # looks like a run of an earlier version
    before = tree(tmp_path)
    code = main(cli(manifest, str(tmp_path), "data", "--overwrite"))
    err = capsys.readouterr().err
    assert code == 2 and "holds the manifest" in err, err
    assert tree(tmp_path) == before


def job(manifest: str, out: str, run_id: str, **extra) -> JobSpec:
    return JobSpec(
        manifest_uri=manifest,
        out=out,
        run_id=run_id,
        edits=list(parse_chain("loudness=-23")),
        executor="local",
        report="none",
        **extra,
    )


def test_overwrite_refuses_a_run_whose_delivered_audio_is_the_new_sources(tmp_path, capsys):
    """Re-editing a run's outputs into the same run id would delete them before reading."""
    manifest = catalog(tmp_path / "cat")
    out = tmp_path / "runs"
    run_inprocess(job(manifest, str(out), "r1"))
    delivered = sorted((out / "r1" / "audio").glob("*.flac"))
    again = write_manifest(
        out / "again.parquet",
        [{"clip_id": f"d{i}", "audio_uri": str(p)} for i, p in enumerate(delivered)],
    )
    before = tree(out)
    code = main(cli(again, str(out), "r1", "--overwrite"))
    err = capsys.readouterr().err
    assert code == 2 and "row 0: field 'audio_uri'" in err and "inside the run folder" in err, err
    assert tree(out) == before


def test_overwrite_keeps_what_the_run_did_not_write_and_validates_first(tmp_path, capsys):
    manifest = catalog(tmp_path / "cat")
    out = tmp_path / "runs"
    run_inprocess(job(manifest, str(out), "r1"))
    run = out / "r1"
    assert (run / MARKER).is_file()
    (run / "notes.txt").write_text("mine")
    (run / "audio" / "keep-me.txt").write_text("mine too")
    # a job that does not validate clears nothing
    before = tree(out)
    code = main(cli(str(tmp_path / "nope.parquet"), str(out), "r1", "--overwrite"))
    assert code == 2 and "manifest not found" in capsys.readouterr().err
    assert tree(out) == before
    record = run_inprocess(job(manifest, str(out), "r1", overwrite=True))
    assert record["counts"]["ok"] == 2 and record["attempt"] == 1
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "audio" / "keep-me.txt").read_text() == "mine too"


def test_a_run_folder_written_before_the_marker_is_still_a_run(tmp_path):
    manifest = catalog(tmp_path / "cat")
    out = tmp_path / "runs"
    run_inprocess(job(manifest, str(out), "old"))
    (out / "old" / MARKER).unlink()  # as an earlier version left it
    record = run_inprocess(job(manifest, str(out), "old", overwrite=True))
    assert record["counts"]["ok"] == 2
    assert (out / "old" / MARKER).is_file()  # adopted at its next attempt


def test_an_empty_existing_folder_is_used(tmp_path):
    manifest = catalog(tmp_path / "cat")
    (tmp_path / "runs" / "fresh").mkdir(parents=True)
    record = run_inprocess(job(manifest, str(tmp_path / "runs"), "fresh"))
    assert record["counts"]["ok"] == 2


def test_a_prefix_on_s3_that_is_not_a_run_is_refused(s3, capsys):
    rows = [{"clip_id": "a", "audio_uri": put_clip(s3, "catalog/own/a.flac", 0.5)}]
    sink = io.BytesIO()
    write_manifest(sink, rows)  # type: ignore[arg-type]
    s3.pipe("catalog/own/manifest.parquet", sink.getvalue())
    s3.pipe("runs/own/theirs/report.csv", b"someone else's file")
    for extra in ((), ("--overwrite",)):
        code = main(cli("s3://catalog/own/manifest.parquet", "s3://runs/own", "theirs", *extra))
        assert code == 2 and "not a stepedit run folder" in capsys.readouterr().err
    s3.invalidate_cache()
    assert s3.ls("runs/own/theirs", detail=False) == ["runs/own/theirs/report.csv"]
    # the catalog's own prefix as the run folder
    code = main(cli("s3://catalog/own/manifest.parquet", "s3://catalog", "own", "--overwrite"))
    assert code == 2 and "not a stepedit run folder" in capsys.readouterr().err
    assert RunStore("s3://catalog", "own").exists("catalog/own/a.flac")
