"""The `edit_catalog` flow: validate -> plan shards -> one task per shard -> merge -> summary."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from stepedit_core.job import JobSpec
from stepedit_tasks.merge import merge_outputs
from stepedit_tasks.plan import plan_shards
from stepedit_tasks.run_shard import run_shard
from stepedit_tasks.summarize import summarize
from stepedit_tasks.validate import validate


@flow(name="edit_catalog", flow_run_name="{job.run_id}", log_prints=True)
def edit_catalog(job: JobSpec) -> dict[str, Any]:
    """Edit every clip of a catalog manifest; returns the run record (also in run.json)."""
    started = time.time()
    logger = get_run_logger()
    validation = validate(job)
    logger.info(
        "manifest %s: %d rows, sha256 %s", job.manifest_uri, validation.rows, validation.sha256[:12]
    )
    plan = plan_shards(job)
    # Shards run one after another: each already spreads over the whole Ray cluster, and
    # sequential shards keep the driver's memory to one shard's results at a time.
    shards = [run_shard(job, shard) for shard in plan.shards]
    counts = merge_outputs(job)
    return summarize(job, validation, plan, counts, started, shards)
