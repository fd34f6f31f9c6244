"""Nothing unverified is trusted: a resume checks every committed part it builds on (a flipped
audio byte, a truncated part) and quarantines a damaged one with a note in job.json, redoes its
clip-rounds and ends intact under verify; a delivered file that does not match its record is
written again before the run is called finished; a review page that failed leaves the run
unfinished, and the rerun builds it. Local disk and the S3 server."""

from __future__ import annotations

import io
import json

import fsspec
import pytest
import soundfile as sf
from durability import check_finished_run

from stepedit_core.audit import verify_run
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.report import build_report

from conftest import run_inprocess, tone, write_clip, write_manifest

CLIPS, ROUNDS = 6, 2


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """(manifest, out) of a small catalog on local disk or on the S3 server."""

    def make(name: str, clip_ids: list[str] | None = None) -> tuple[str, str]:
        ids = clip_ids or [f"c{i}" for i in range(CLIPS)]
        if request.param == "local":
            folder = tmp_path / name
            folder.mkdir()
            rows = [
                {"clip_id": c, "audio_uri": write_clip(folder / f"{i}.wav", 0.5, seed=i)}
                for i, c in enumerate(ids)
            ]
            return write_manifest(folder / "m.parquet", rows), str(tmp_path / "runs")
        fs = request.getfixturevalue("s3")
        prefix = f"catalog/integrity-{name}"
        rows = [
            {"clip_id": c, "audio_uri": put_distinct_clip(fs, f"{prefix}/{i}.flac", seed=i)}
            for i, c in enumerate(ids)
        ]
        sink = io.BytesIO()
        write_manifest(sink, rows)  # type: ignore[arg-type]
        fs.pipe(f"{prefix}/m.parquet", sink.getvalue())
        return f"s3://{prefix}/m.parquet", f"s3://runs/integrity-{name}"

    return make


def put_distinct_clip(fs: object, key: str, seed: int) -> str:
    """A clip of its own (its noise differs): round objects are content-addressed, so clips
    with equal audio would share them, and damage to one would reach every clip."""
    sink = io.BytesIO()
    sf.write(sink, tone(0.5, seed=seed), 24000, format="FLAC")
    fs.pipe(key, sink.getvalue())  # type: ignore[attr-defined]
    return f"s3://{key}"


def job(manifest: str, out: str, run_id: str, report: str = "none") -> JobSpec:
    return JobSpec(
        manifest_uri=manifest,
        out=out,
        run_id=run_id,
        edits=list(parse_chain("loudness=-23")),
        iterations=ROUNDS,
        shard_size=3,
        executor="local",
        report=report,
    )


def unfinish(store: RunStore, reopen_shard: bool) -> None:
    """Leave the run as a crash before merge would: no run.json, no manifest (and, with
    `reopen_shard`, shard 0 not marked done)."""
    names = ["run.json", "run.json.sha256", "manifest.parquet"]
    if reopen_shard:
        names.append("_work/results/shard-00000.parquet")
    store.remove([store.path(n) for n in names])


def flip_audio_byte(store: RunStore, part: str) -> None:
    """One byte of the round object the part's first record references flipped."""
    ref = store.read_table(part, ["audio_ref"]).column(0)[0].as_py()
    path = store.path(ref)
    data = store.read_bytes(path)
    store.fs.pipe_file(path, data[:100] + bytes([data[100] ^ 0x01]) + data[101:])


def truncate(store: RunStore, part: str) -> None:
    data = store.read_bytes(part)
    store.fs.pipe_file(part, data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, reopen_shard", [(flip_audio_byte, True), (truncate, False)], ids=["flip", "truncate"]
)
def test_a_damaged_part_is_quarantined_and_its_clip_rounds_done_again(place, damage, reopen_shard):
    manifest, out = place(f"{damage.__name__}")
    run_inprocess(job(manifest, out, "r"))
    store = RunStore(out, "r")
    part = store.iteration_part(0, 0)
    unfinish(store, reopen_shard)
    damage(store, part)
    record = run_inprocess(job(manifest, out, "r"))
    assert record["counts"]["ok"] == CLIPS and record["attempt"] == 2
    notes = store.read_json(store.job_json)["quarantined"]
    if damage is flip_audio_byte:  # the altered object goes too, so the redo can publish it
        moved = notes.pop(0)
        assert moved["object"].startswith("round-audio/") and "does not hash" in moved["problem"]
    assert [n["object"] for n in notes] == ["iterations/shard-00000-part-00000.parquet"]
    expected = "does not hash" if damage is flip_audio_byte else "unreadable"
    assert expected in notes[0]["problem"]
    assert store.exists(store.path(notes[0]["moved_to"]))
    assert sum(s["quarantined_parts"] for s in record["shards"]) == 1
    assert record["clip_rounds"]["done_now"] == 3 * ROUNDS  # shard 0's three clips, again
    check_finished_run(out, "r", CLIPS, ROUNDS)
    report = verify_run(out, "r")
    assert report.intact, report.text()


def test_an_altered_delivered_file_is_written_again_before_the_run_finishes(place):
    manifest, out = place("delivered")
    run_inprocess(job(manifest, out, "r"))
    store = RunStore(out, "r")
    unfinish(store, reopen_shard=False)
    victim = store.list(store.audio_dir, suffix=".flac")[0]
    store.fs.pipe_file(victim, b"not the delivered audio")
    record = run_inprocess(job(manifest, out, "r"))
    assert record["counts"]["ok"] == CLIPS
    notes = store.read_json(store.job_json)["redelivered"]
    assert [store.path(n["object"]) for n in notes] == [victim]
    report = verify_run(out, "r")
    assert report.intact, report.text()


def test_a_page_that_failed_leaves_the_run_unfinished_and_the_rerun_builds_it(place, monkeypatch):
    manifest, out = place("page", ["a\x00b", *(f"c{i}" for i in range(1, CLIPS))])

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("stepedit_core.report.build_report", disk_full)
        with pytest.raises(OSError, match="No space left"):
            run_inprocess(job(manifest, out, "r", report="index"))
    store = RunStore(out, "r")
    assert store.exists(store.run_json)
    record = run_inprocess(job(manifest, out, "r", report="index"))
    assert "nothing_to_do" not in record and record["attempt"] == 2
    page = store.read_bytes(store.path("report", "index.html")).decode()
    assert "\x00" not in page and "a\\x00b" in page  # the NUL shown escaped, not written raw
    assert run_inprocess(job(manifest, out, "r", report="index"))["nothing_to_do"]


def test_the_page_shows_a_source_that_is_gone_as_unavailable(tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    clip = write_clip(folder / "a.wav", 0.5)
    manifest = write_manifest(folder / "m.parquet", [{"clip_id": "a", "audio_uri": clip}])
    out = str(tmp_path / "runs")
    run_inprocess(job(manifest, out, "r"))
    (folder / "a.wav").unlink()
    page = build_report(out, "r")
    html = fsspec.open(page, "r").open().read()
    assert "unavailable" in html and "audio file not found" in html
    summary = json.loads((tmp_path / "runs" / "r" / "report" / "report.json").read_text())
    assert summary["clips"] == 1


def test_a_damaged_shard_results_object_is_quarantined_and_rebuilt_from_its_parts(place):
    manifest, out = place("results")
    run_inprocess(job(manifest, out, "r"))
    store = RunStore(out, "r")
    unfinish(store, reopen_shard=False)
    truncate(store, store.shard_results(1))
    record = run_inprocess(job(manifest, out, "r"))
    assert record["counts"]["ok"] == CLIPS
    assert record["clip_rounds"]["done_now"] == 0  # every clip-round came from the parts
    notes = store.read_json(store.job_json)["quarantined"]
    assert [n["object"] for n in notes] == ["_work/results/shard-00001.parquet"]
    check_finished_run(out, "r", CLIPS, ROUNDS)
    assert verify_run(out, "r").intact
