"""One Prefect task per shard (thousands of clips): Prefect never sees single clips, and Ray
workers never talk to the Prefect API; only this driver-side task logs progress."""

from __future__ import annotations

import time

from prefect import get_run_logger, task

from stepedit_core.job import JobSpec
from stepedit_core.plan import summary_dict
from stepedit_core.shard import run_shard as run_core_shard

PROGRESS_EVERY_S = 30.0


@task(
    name="run-shard",
    task_run_name="shard-{shard}",
    retries=2,
    retry_delay_seconds=[10, 60],  # back off: a retry usually follows a lost worker or an outage
)
def run_shard(job: JobSpec, shard: int) -> dict:
    logger = get_run_logger()
    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            logger.info("shard %d: %d/%d clips done", shard, done, total)

    summary = run_core_shard(job, shard, progress=progress)
    logger.info(
        "shard %d finished: %d ok, %d failed, %d records in %.1f s",
        shard,
        summary.ok,
        summary.failed,
        summary.records,
        summary.seconds,
    )
    return summary_dict(summary)
