"""Prefect tasks, one per run step: each wraps the library's step (`RunSteps`) with retries, a
name and logs. Prefect never sees single clips: clips stream through one executor run, and
shards are the unit of commits and progress. Ray workers never talk to the Prefect API: only
these driver-side tasks log.

Tasks take the run's `RunSteps`, which holds the engine, store and executor built once for the
run; `NO_CACHE` keeps Prefect from hashing that object as a cache key.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from stepedit_core.catalog.manifest import MergeCounts
from stepedit_core.lifecycle.checks import Validation
from stepedit_core.lifecycle.planning import Sharding
from stepedit_core.lifecycle.run import RunSteps
from stepedit_core.lifecycle.shard import ShardsOutcome
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
    get_run_logger().info(
        "planned %d rows in %d shard(s) of up to %d; %d row(s) refused at plan time %s",
        sharding.planned_rows,
        len(sharding.shards),
        steps.job.shard_size,
        sharding.refused_rows,
        sharding.refused_by_code or "",
    )
    return sharding


@task(name="begin", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def begin(steps: RunSteps, validation: Validation) -> int:
    attempt = steps.begin(validation)
    if attempt > 1:
        get_run_logger().info("run %s: attempt %d, resuming", steps.job.run_id, attempt)
    return attempt


@task(
    name="run-shards",
    retries=2,
    retry_delay_seconds=[10, 60],  # back off: a retry usually follows a lost worker or an outage
    cache_policy=NO_CACHE,
)
def run_shards(steps: RunSteps, shards: list[int]) -> ShardsOutcome:
    """All pending shards in one executor run (each model sets up once per run); a retry
    resumes from the committed parts, so it redoes only what was not committed."""
    logger = get_run_logger()
    last = [time.monotonic()]

    def progress(done: int, total: int, failed: int) -> None:
        steps.progress(done, total, failed)  # the run's own watcher (the CLI's bar) first
        now = time.monotonic()
        if done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            logger.info("%d/%d clips done, %d failed", done, total, failed)

    outcome = steps.run_shards(shards, progress)
    for summary in outcome.summaries:
        logger.info(
            "shard %d: %d ok, %d failed, %d clip-rounds committed now, %d resumed",
            summary.shard,
            summary.ok,
            summary.failed,
            summary.records,
            summary.resumed_records,
        )
    return outcome


@task(name="merge", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def merge(steps: RunSteps) -> MergeCounts:
    return steps.merge()


@task(name="summarize", cache_policy=NO_CACHE)
def finish(
    steps: RunSteps,
    validation: Validation,
    sharding: Sharding,
    counts: MergeCounts,
    outcome: ShardsOutcome,
) -> dict[str, Any]:
    record = steps.finish(validation, sharding, counts, outcome)
    create_markdown_artifact(
        key=artifact_key(steps.job.run_id),
        markdown=summary_markdown(record),
        description=f"stepedit run {steps.job.run_id}",
    )
    return record


@task(name="report", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def report(steps: RunSteps) -> str | None:
    uri = steps.report()
    if uri:
        get_run_logger().info("review page: %s", uri)
    return uri


STEP_TASKS = {
    "validate": validate,
    "begin": begin,
    "plan": plan,
    "run_shards": run_shards,
    "merge": merge,
    "finish": finish,
    "report": report,
}
