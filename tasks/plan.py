"""Check every row against the engine and split the good ones into shards."""

from __future__ import annotations

from prefect import get_run_logger, task

from stepedit_core.job import JobSpec
from stepedit_core.plan import Plan, plan_run


@task(name="plan-shards", retries=1, retry_delay_seconds=5)
def plan_shards(job: JobSpec) -> Plan:
    plan = plan_run(job)
    get_run_logger().info(
        "planned %d rows in %d shard(s) of up to %d; %d row(s) refused at plan time %s",
        plan.planned_rows,
        len(plan.shards),
        job.shard_size,
        plan.refused_rows,
        plan.refused_by_code or "",
    )
    return plan
