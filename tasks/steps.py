"""Prefect tasks, one per run step: each wraps the library's step (`RunSteps`) with retries, a
name and logs. Prefect sees shards (thousands of clips), never single clips, and Ray workers
never talk to the Prefect API: only these driver-side tasks log.

Tasks take the run's `RunSteps`, which holds the engine, store and executor built once for the
run; `NO_CACHE` keeps Prefect from hashing that object as a cache key.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from stepedit_core.checks import Validation
from stepedit_core.manifest import MergeCounts
from stepedit_core.planning import Sharding
from stepedit_core.progress import run_progress
from stepedit_core.run import RunSteps
from stepedit_core.shard import ShardSummary
from stepedit_tasks.summary import artifact_key, summary_markdown

PROGRESS_EVERY_S = 30.0


@task(name="validate", retries=0, cache_policy=NO_CACHE)
def validate(steps: RunSteps) -> Validation:
    validation = steps.validate()
    get_run_logger().info(
        "manifest %s: %d rows, sha256 %s",
        steps.job.manifest_uri,
        validation.rows,
        validation.sha256[:12],
    )
    return validation


@task(name="plan-shards", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def plan(steps: RunSteps) -> Sharding:
    sharding = steps.plan()
    run_progress().planned(sharding.planned_rows)
    get_run_logger().info(
        "planned %d rows in %d shard(s) of up to %d; %d row(s) refused at plan time %s",
        sharding.planned_rows,
        len(sharding.shards),
        steps.job.shard_size,
        sharding.refused_rows,
        sharding.refused_by_code or "",
    )
    return sharding


@task(
    name="run-shard",
    task_run_name="shard-{shard}",
    retries=2,
    retry_delay_seconds=[10, 60],  # back off: a retry usually follows a lost worker or an outage
    cache_policy=NO_CACHE,
)
def run_shard(steps: RunSteps, shard: int) -> ShardSummary:
    logger = get_run_logger()
    last = [time.monotonic()]

    def progress(done: int, total: int, failed: int) -> None:
        run_progress().shard(shard, done, failed)
        now = time.monotonic()
        if done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            logger.info("shard %d: %d/%d clips done", shard, done, total)

    summary = steps.run_shard(shard, progress)
    logger.info(
        "shard %d finished: %d ok, %d failed, %d records in %.1f s",
        shard,
        summary.ok,
        summary.failed,
        summary.records,
        summary.seconds,
    )
    return summary


@task(name="merge", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def merge(steps: RunSteps) -> MergeCounts:
    return steps.merge()


@task(name="summarize", cache_policy=NO_CACHE)
def finish(
    steps: RunSteps,
    validation: Validation,
    sharding: Sharding,
    counts: MergeCounts,
    shards: list[ShardSummary],
) -> dict[str, Any]:
    record = steps.finish(validation, sharding, counts, shards)
    create_markdown_artifact(
        key=artifact_key(steps.job.run_id),
        markdown=summary_markdown(record),
        description=f"stepedit run {steps.job.run_id}",
    )
    return record


STEP_TASKS = {
    "validate": validate,
    "plan": plan,
    "run_shard": run_shard,
    "merge": merge,
    "finish": finish,
}
