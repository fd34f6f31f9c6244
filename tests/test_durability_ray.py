"""Durability on the Ray executor (2-CPU session cluster): a worker that dies on one clip costs a
retry of its batch and then a `worker_died` record for that clip alone; model stages set up once
per actor for the whole run, not once per shard; a CPU-bound edit finishes with the pool sizing
that leaves Ray Data's own tasks their share (the hang guard)."""

from __future__ import annotations

import json
import sys

import dying_engine
import pyarrow.parquet as pq
import pytest
from durability import cli_env, run_args, stepedit

import stepedit_core.lifecycle.run as run_module
from stepedit_core.executors.ray_data import RayDataExecutor, one_actor_suffices, size_pools
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.rounds import build_stages
from stepedit_core.lifecycle.run import run_job

from conftest import write_clip, write_manifest


def catalog(folder, clip_ids: list[str], seconds: float = 0.5) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"clip_id": c, "audio_uri": write_clip(folder / f"{c}.wav", seconds, f0=130.0 + i)}
        for i, c in enumerate(clip_ids)
    ]
    return write_manifest(folder / "catalog.parquet", rows)


def job_for(manifest: str, out, run_id: str, edit: str, shard_size: int = 2000) -> JobSpec:
    return JobSpec(
        manifest_uri=manifest,
        out=str(out),
        run_id=run_id,
        edits=list(parse_chain(edit)),
        executor="ray",
        shard_size=shard_size,
    )


@pytest.mark.slow
def test_a_worker_that_dies_on_one_clip_fails_that_clip_alone(ray_cluster, tmp_path, monkeypatch):
    import ray.cloudpickle

    # the stage travels to the actors by value: the workers can not import the tests folder
    ray.cloudpickle.register_pickle_by_value(sys.modules["dying_engine"])
    log_path = tmp_path / "batches.jsonl"
    engine = dying_engine.DyingEngine()
    engine.log_path = str(log_path)
    monkeypatch.setattr(run_module, "make_engine", lambda *args, **kwargs: engine)
    # more clips than one batch (4): the run streams through Ray Data's actor pools (the
    # halves it then runs again are small enough for one plain actor each)
    clips = ["a", "b", dying_engine.KILLER, "c", "d"]
    job = job_for(catalog(tmp_path / "catalog", clips), tmp_path / "runs", "dies", "loudness=-23")
    assert not one_actor_suffices(build_stages(engine, 1, False, qc_plan=job.qc_plan()), 5)
    record = run_job(job, executor=RayDataExecutor())
    rows = pq.read_table(tmp_path / "runs" / "dies" / "manifest.parquet").to_pylist()
    status = {r["clip_id"]: (r["status"], r["error_code"]) for r in rows}
    assert status.pop(dying_engine.KILLER) == ("failed", "worker_died")
    assert all(s == ("ok", None) for s in status.values()), status
    assert len(rows) == len(clips)
    assert record["counts"]["ok"] == len(clips) - 1
    assert record["errors_by_code"] == {"worker_died": 1}
    batches = [json.loads(line) for line in log_path.read_text().splitlines()]
    fatal = [b for b in batches if dying_engine.KILLER in b["clips"]]
    # the first batch holding the killer ran twice (one retry) on two processes before the
    # executor gave up on it
    first = fatal[0]["clips"]
    assert fatal[1]["clips"] == first and fatal[0]["pid"] != fatal[1]["pid"]
    # in the end the killer was run alone, and the other clips each finished once
    assert fatal[-1]["clips"] == [dying_engine.KILLER]


@pytest.mark.slow
def test_a_run_of_one_batch_in_one_actor_also_fails_only_the_clip_that_kills_it(
    ray_cluster, tmp_path, monkeypatch
):
    """A run small enough for one actor (`one_actor_suffices`) goes to a plain actor, not
    through Ray Data: the same one retry, then the clip alone is `worker_died`."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules["dying_engine"])
    log_path = tmp_path / "batches.jsonl"
    engine = dying_engine.DyingEngine()
    engine.log_path = str(log_path)
    monkeypatch.setattr(run_module, "make_engine", lambda *args, **kwargs: engine)
    clips = ["a", dying_engine.KILLER, "c"]
    job = job_for(catalog(tmp_path / "catalog", clips), tmp_path / "runs", "one", "loudness=-23")
    assert one_actor_suffices(build_stages(engine, 1, False, qc_plan=job.qc_plan()), len(clips))
    record = run_job(job, executor=RayDataExecutor())
    rows = pq.read_table(tmp_path / "runs" / "one" / "manifest.parquet").to_pylist()
    status = {r["clip_id"]: (r["status"], r["error_code"]) for r in rows}
    assert status == {
        "a": ("ok", None),
        dying_engine.KILLER: ("failed", "worker_died"),
        "c": ("ok", None),
    }
    assert record["errors_by_code"] == {"worker_died": 1}
    batches = [json.loads(line) for line in log_path.read_text().splitlines()]
    # the whole run's one batch, then its retry on a restarted actor (another process)
    assert batches[0]["clips"] == batches[1]["clips"] == clips
    assert batches[0]["pid"] != batches[1]["pid"]
    assert [dying_engine.KILLER] in [b["clips"] for b in batches]  # in the end, alone
    assert record["setups"]["signal_edit"] >= 2  # the restarted actor set up again


@pytest.mark.slow
def test_model_stage_sets_up_once_per_actor_not_once_per_shard(ray_cluster, tmp_path):
    manifest = catalog(tmp_path / "catalog", [f"s{i}" for i in range(9)])
    record = run_job(
        job_for(manifest, tmp_path / "runs", "setups", "loudness=-23", shard_size=3),
        executor=RayDataExecutor(),
    )
    assert record["counts"]["shards"] == 3 and record["counts"]["ok"] == 9
    engine = run_module.make_engine("signal")
    stages = build_stages(engine, 1, False)
    pool = {p.stage: p for p in size_pools(stages, 2.0, 0.0)}["signal_edit"]
    setups = record["setups"]["signal_edit"]
    # at most one setup per actor of the one pool (2 on this cluster); one per shard per
    # actor would be 3 or more
    assert 1 <= setups <= pool.max_size < 3, (setups, pool)


@pytest.mark.slow
def test_cpu_bound_edit_finishes_on_two_cores(tmp_path):
    """A real `stepedit run` on a local Ray cluster of this machine's cores: a starved Ray Data
    (pools holding every CPU) waits forever, so the subprocess timeout is the guard."""
    manifest = catalog(tmp_path / "catalog", [f"n{i}" for i in range(24)], seconds=1.0)
    out = tmp_path / "runs"
    args = run_args(manifest, str(out), "hang", "--report", "none")  # no page: nothing reads it
    args[args.index("loudness=-23")] = "denoise"
    args[args.index("local")] = "ray"
    # about 30 s idle; the guard leaves room for a 2-core machine that other work keeps busy
    done = stepedit(args, cli_env(), timeout=300)
    assert done.code == 0, done.err
    record = json.loads((out / "hang" / "run.json").read_text())
    assert record["counts"]["ok"] == 24
