"""A real `stepedit run` killed with SIGKILL (at each named failpoint, and once by an outside
kill at a random moment), then the same command again: the run finishes with every row once,
every clip-round once, every delivered file the bytes its record names, resumed work counted,
an intact audit; a third run does nothing. On local disk and on the S3 server."""

from __future__ import annotations

import io
import json
import random
import time

import fsspec
import pyarrow.parquet as pq
import pytest
from durability import (
    check_finished_run,
    cli_env,
    kill_group,
    local_catalog,
    output,
    run_args,
    s3_catalog,
    start,
    stepedit,
)

from stepedit_core.foundation.failpoints import HOLD_ENV

CLIPS = 200
ROUNDS = 2
SECONDS = 0.5  # BS.1770 loudness needs more than one 0.4 s block
# 150-clip shards of 2 rounds: shard 0 commits a 256-record part mid-shard, then the rest.
# No review page: it is built after run.json, past every kill point, and nothing here reads it
# (its own resume is tested in test_resume_integrity.py); on S3 it cost a third of a test.
RUN_OPTIONS = ["--shard-size", "150", "--iterations", str(ROUNDS), "--report", "none"]

# generous: Prefect's temporary server may take a minute to start on a loaded 2-core machine
START_TIMEOUT_S = 240
# where a randomly killed attempt waits for its kill: after every commit, before run.json
HOLD_AT = "merge.manifest_written"

FAILPOINTS = [
    "plan.shard_written",  # while planning: one shard plan written, no done.json
    "shard.part_committed",  # mid-shard: a part committed, its audio not yet published
    "shard.audio_published",  # a part and its audio, the shard not marked done
    "merge.manifest_written",  # manifest written, run.json not
]


def committed_rows(out: str, run_id: str) -> tuple[set[int], int]:
    """The rows committed parts hold, and how many clip-rounds they hold."""
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{run_id}")
    fs.invalidate_cache()
    committed: set[int] = set()
    records = 0
    if fs.exists(f"{root}/iterations"):
        for part in fs.ls(f"{root}/iterations", detail=False):
            if part.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(fs.cat_file(part)), columns=["row_index"])
                committed.update(table.column("row_index").to_pylist())
                records += table.num_rows
    return committed, records


def audio_only_after_commit(out: str, run_id: str) -> int:
    """Every final audio file on disk belongs to a clip a committed part holds (a crash never
    leaves a file ahead of its record); returns how many clip-rounds are committed. Only once
    no attempt runs: a live one may commit and publish between the two listings."""
    committed, records = committed_rows(out, run_id)
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{run_id}")
    if fs.exists(f"{root}/audio"):
        for path in fs.ls(f"{root}/audio", detail=False):
            name = path.rsplit("/", 1)[1]
            if name.startswith("."):  # a local write's temporary name, never a published file
                continue
            row = int(name.split("-", 1)[0])
            assert row in committed, f"{path} is published but no committed part holds it"
    return records


def run_finished(out: str, run_id: str) -> bool:
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{run_id}")
    fs.invalidate_cache()
    return fs.exists(f"{root}/run.json")


def kill(args: list[str], env: dict, crash: str, out: str, run_id: str) -> None:
    """One attempt that dies: at a failpoint, or by an outside SIGKILL after a random delay."""
    if crash == "random":
        # held once the manifest is written, the attempt can not finish before the kill, however
        # fast it runs: the random moment falls between its first commit and that hold
        proc = start(args, {**env, HOLD_ENV: HOLD_AT})
        try:
            # a random moment once this attempt's work is under way (it committed a part), so
            # that the kill lands between commits rather than in Prefect's start-up
            before = committed_rows(out, run_id)[1]
            deadline = time.monotonic() + START_TIMEOUT_S
            while committed_rows(out, run_id)[1] == before:
                assert proc.poll() is None and time.monotonic() < deadline, output(proc)
                time.sleep(0.1)
            time.sleep(random.uniform(0.0, 1.5))
            assert proc.poll() is None, f"the attempt ended before its kill: {output(proc)}"
        finally:  # a failed check must not leave a held attempt behind
            kill_group(proc)
        assert not run_finished(out, run_id), "the killed attempt wrote run.json"
        return
    killed = stepedit(args, {**env, "STEPEDIT_FAILPOINT": crash})
    assert killed.code == -9, f"{crash} was not reached: {killed.code}\n{killed.err}"


def crash_then_resume(manifest: str, out: str, run_id: str, env: dict, crashes: list[str]) -> dict:
    """Kill one attempt after another (each resuming the last), run the same command to the
    end, check the outcome, and check that a third run does nothing."""
    args = run_args(manifest, out, run_id, *RUN_OPTIONS)
    committed = 0
    for crash in crashes:
        kill(args, env, crash, out, run_id)
        now = audio_only_after_commit(out, run_id)
        assert now >= committed  # committed work is never lost or redone
        committed = now
    resumed = stepedit(args, env)
    assert resumed.code == 0, resumed.err
    record = check_finished_run(out, run_id, CLIPS, ROUNDS)
    assert record["attempt"] == len(crashes) + 1
    assert record["clip_rounds"]["resumed"] == committed > 0, (record["clip_rounds"], committed)
    verify = stepedit(["verify", f"{out.rstrip('/')}/{run_id}", "--json"], env)
    assert verify.code == 0, verify.out[-2000:]
    assert json.loads(verify.out)["intact"] is True
    third = stepedit(args, env)
    assert third.code == 0 and "nothing to do" in third.out.lower(), third.out
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{run_id}")
    fs.invalidate_cache()
    assert json.loads(fs.cat_file(f"{root}/run.json"))["attempt"] == record["attempt"]
    return record


@pytest.mark.slow
def test_killed_at_every_failpoint_in_turn_finishes_exactly_once_on_local_disk(tmp_path):
    manifest = local_catalog(tmp_path / "catalog", CLIPS, SECONDS)
    # the second publish: the first part's audio is already out, the shard is not done
    crashes = [*FAILPOINTS[:2], "shard.audio_published:2", FAILPOINTS[3]]
    record = crash_then_resume(manifest, str(tmp_path / "runs"), "chain", cli_env(), crashes)
    assert record["clip_rounds"]["done_now"] == 0  # the last kill came after every shard


@pytest.mark.slow
def test_killed_at_a_random_moment_finishes_exactly_once_on_local_disk(tmp_path):
    manifest = local_catalog(tmp_path / "catalog", CLIPS, SECONDS)
    crash_then_resume(manifest, str(tmp_path / "runs"), "random", cli_env(), ["random"])


@pytest.mark.slow
def test_killed_mid_shard_and_at_random_finishes_exactly_once_on_s3(s3):
    manifest = s3_catalog(s3, "catalog/crash", CLIPS, SECONDS)
    # the subprocess finds the moto server through AWS_ENDPOINT_URL (set by the s3 fixture)
    crash_then_resume(
        manifest, "s3://runs/crash", "chain", cli_env(), ["shard.part_committed", "random"]
    )
