"""Incremental runs: a later run under the same --out edits only new or changed rows and points
the others at the earlier outputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stepedit_core.audit import verify_run
from stepedit_core.engines.signal.engine import SignalEngine
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.lifecycle.incremental import OutIndex
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import RunSteps
from stepedit_flows.cli import build_parser
from stepedit_flows.deploy import job_parameters
from stepedit_flows.scheduled import job_spec

from conftest import run_inprocess, write_clip, write_manifest

EDIT = "loudness=-20"


def _rows(clips: Path, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        uri = clips / f"c{i}.wav"
        if not uri.exists():
            write_clip(uri, 0.6 + 0.05 * i, f0=150.0 + 10 * i)
        rows.append({"clip_id": f"c{i}", "audio_uri": str(uri)})
    return rows


def _job(tmp_path: Path, manifest: str, run_id: str, incremental: bool = True) -> JobSpec:
    return JobSpec(
        manifest_uri=manifest,
        out=str(tmp_path / "out"),
        run_id=run_id,
        edits=(EDIT,),
        executor="local",
        shard_size=3,
        incremental=incremental,
    )


def _manifest(tmp_path: Path, run_id: str) -> list[dict]:
    return pq.read_table(tmp_path / "out" / run_id / "manifest.parquet").to_pylist()


def _edited_clip_ids(tmp_path: Path, run_id: str) -> set[str]:
    """Clips that have round records in this run's own iterations dataset."""
    folder = tmp_path / "out" / run_id / "iterations"
    if not folder.exists():
        return set()
    return set(pq.read_table(folder, columns=["clip_id"]).column("clip_id").to_pylist())


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture()
def first_run(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    rows = _rows(clips, 6)
    manifest = write_manifest(tmp_path / "m1.parquet", rows)
    record = run_inprocess(_job(tmp_path, manifest, "r1", incremental=False))
    assert record["counts"]["ok"] == 6, record["errors_by_code"]
    return clips, rows


def test_incremental_run_edits_only_new_and_changed_rows(tmp_path, first_run):
    clips, rows = first_run
    before = {r["clip_id"]: r for r in _manifest(tmp_path, "r1")}
    first_hashes = {cid: _sha(r["output_uri"]) for cid, r in before.items()}
    # the catalog grows, one file gets new bytes under the same clip id and path, one row
    # gets another edit
    grown = _rows(clips, 9)
    write_clip(clips / "c1.wav", 0.7, f0=400.0)
    grown[2]["edit"] = "loudness=-30"
    manifest = write_manifest(tmp_path / "m2.parquet", grown)

    record = run_inprocess(_job(tmp_path, manifest, "r2"))

    redone = {"c1", "c2", "c6", "c7", "c8"}
    assert _edited_clip_ids(tmp_path, "r2") == redone
    assert record["counts"]["ok"] == 9 and record["counts"]["reused"] == 4
    assert record["incremental"]["reused_rows"] == 4
    out = _manifest(tmp_path, "r2")
    assert [r["clip_id"] for r in out] == [f"c{i}" for i in range(9)]
    for row in out:
        assert row["status"] == "ok", row
        if row["clip_id"] in redone:
            assert row["reused_from_run"] is None
            assert "/r2/audio/" in row["output_uri"]
        else:
            assert row["reused_from_run"] == "r1"
            assert row["output_uri"] == before[row["clip_id"]]["output_uri"]
            assert _sha(row["output_uri"]) == first_hashes[row["clip_id"]]
            assert row["iterations_done"] == 1
    # the reused rows are not audit failures of r2: their records live in r1
    report = verify_run(str(tmp_path / "out"), "r2")
    assert report.intact, report.text()

    # a third run over the same catalog finds everything, the reused rows still pointing at r1
    record = run_inprocess(_job(tmp_path, manifest, "r3"))
    assert record["counts"]["reused"] == 9 and _edited_clip_ids(tmp_path, "r3") == set()
    third = {r["clip_id"]: r["reused_from_run"] for r in _manifest(tmp_path, "r3")}
    assert third == {f"c{i}": ("r2" if f"c{i}" in redone else "r1") for i in range(9)}
    # unchanged files were not read again: their hashes came from r2's size+mtime records
    assert record["incremental"]["sources_hashed"] == 0
    assert record["incremental"]["source_hashes_reused"] == 9


def test_new_engine_version_redoes_everything(tmp_path, first_run, monkeypatch):
    _, rows = first_run
    manifest = write_manifest(tmp_path / "m2.parquet", rows)
    monkeypatch.setattr(SignalEngine, "version", SignalEngine.version + "-next")
    record = run_inprocess(_job(tmp_path, manifest, "r2"))
    assert record["counts"]["reused"] == 0
    assert _edited_clip_ids(tmp_path, "r2") == {r["clip_id"] for r in rows}
    assert all(r["reused_from_run"] is None for r in _manifest(tmp_path, "r2"))


def test_a_run_that_is_not_incremental_redoes_everything(tmp_path, first_run):
    _, rows = first_run
    manifest = write_manifest(tmp_path / "m2.parquet", rows)
    record = run_inprocess(_job(tmp_path, manifest, "r2", incremental=False))
    assert record["counts"]["reused"] == 0 and len(_edited_clip_ids(tmp_path, "r2")) == 6


def test_outputs_of_a_removed_run_are_not_reused(tmp_path, first_run):
    import shutil

    _, rows = first_run
    shutil.rmtree(tmp_path / "out" / "r1")
    manifest = write_manifest(tmp_path / "m2.parquet", rows)
    record = run_inprocess(_job(tmp_path, manifest, "r2"))
    assert record["counts"]["reused"] == 0 and record["counts"]["ok"] == 6


def test_finished_index_holds_one_row_per_ok_clip(tmp_path, first_run):
    index = OutIndex(str(tmp_path / "out"))
    table = pq.read_table(index.finished_path("r1"))
    assert table.num_rows == 6
    assert set(table.column("run_id").to_pylist()) == {"r1"}
    assert len(set(table.column("key").to_pylist())) == 6
    assert index.finished("other").num_rows == 6
    assert index.finished("r1").num_rows == 0  # a run never reuses its own outputs


def test_incremental_is_part_of_the_fingerprint():
    job = JobSpec(manifest_uri="m", out="o", run_id="r", incremental=True)
    assert job.fingerprint()["incremental"] is True


def test_run_defaults_off_deploy_defaults_on(tmp_path):
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": write_clip(tmp_path / "a.wav")}]
    )
    run = build_parser().parse_args(
        ["run", manifest, "--out", str(tmp_path), "--run-id", "x", "--edit", EDIT]
    )
    assert run.incremental is False
    deploy = ["deploy", "--name", "nightly", "--cron", "0 2 * * *", "--manifest", manifest]
    deploy += ["--out", str(tmp_path), "--edit", EDIT]
    job = job_parameters(build_parser().parse_args(deploy))
    assert job["incremental"] is True
    assert job_spec(job, "nightly-x").incremental is True
    job = job_parameters(build_parser().parse_args([*deploy, "--no-incremental"]))
    assert job["incremental"] is False and job_spec(job, "nightly-x").incremental is False
    # a deployment registered before the switch existed: scheduled runs default to incremental
    older = {k: v for k, v in job.items() if k != "incremental"}
    assert job_spec(older, "nightly-x").incremental is True
    json.dumps(job)  # Prefect stores the parameters as JSON


def test_a_row_that_failed_earlier_is_edited_once_it_can_be(tmp_path, first_run):
    clips, rows = first_run
    late = {"clip_id": "late", "audio_uri": str(clips / "late.wav")}
    manifest = write_manifest(tmp_path / "m2.parquet", [*rows, late])
    record = run_inprocess(_job(tmp_path, manifest, "r2"))
    assert record["counts"]["failed"] == 1 and record["counts"]["reused"] == 6
    write_clip(clips / "late.wav", 0.8)
    record = run_inprocess(_job(tmp_path, manifest, "r3"))
    assert record["counts"]["ok"] == 7 and record["counts"]["reused"] == 6
    assert _edited_clip_ids(tmp_path, "r3") == {"late"}


def test_a_resumed_incremental_run_keeps_what_its_plan_decided(tmp_path, first_run):
    """Planning is written once: an attempt that resumes after planning reads the plan back
    and does not look up the index again (here the index is gone meanwhile)."""
    _, rows = first_run
    manifest = write_manifest(tmp_path / "m2.parquet", rows)
    job = _job(tmp_path, manifest, "r2")
    steps = RunSteps(job, executor=LocalExecutor())
    steps.begin(steps.validate())
    assert steps.plan().reused_rows == 6
    (tmp_path / "out" / "_index" / "finished" / "r1.parquet").unlink()
    record = run_inprocess(job)
    assert record["attempt"] == 2 and record["counts"]["reused"] == 6
    assert _edited_clip_ids(tmp_path, "r2") == set()
    # r2's own index carries the reused outputs forward: a later run still finds them
    record = run_inprocess(_job(tmp_path, manifest, "r3"))
    assert record["counts"]["reused"] == 6
    assert {r["reused_from_run"] for r in _manifest(tmp_path, "r3")} == {"r1"}


def test_reused_rows_carry_the_delivered_round_and_qc_verdict(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    manifest = write_manifest(tmp_path / "m.parquet", _rows(clips, 3))

    def job(run_id: str, select: str) -> JobSpec:
        return _job(tmp_path, manifest, run_id).model_copy(
            update={"iterations": 2, "qc": "r128", "select": select}
        )

    run_inprocess(job("q1", "best"))
    record = run_inprocess(job("q2", "best"))
    assert record["counts"]["reused"] == 3
    columns = ("output_uri", "iterations_done", "selected_round", "selection_reason", "qc_status")
    first = {r["clip_id"]: [r[c] for c in columns] for r in _manifest(tmp_path, "q1")}
    again = {r["clip_id"]: [r[c] for c in columns] for r in _manifest(tmp_path, "q2")}
    assert again == first and all(v[4] in ("pass", "fail") for v in again.values())
    # another round selection delivers other audio: nothing is reused
    assert run_inprocess(job("q3", "last"))["counts"]["reused"] == 0
