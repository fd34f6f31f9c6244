"""Merge plan failures and shard results into the output manifest, in input order."""

from __future__ import annotations

from prefect import task

from stepedit_core.job import JobSpec
from stepedit_core.plan import merge_run


@task(name="merge-outputs", retries=1, retry_delay_seconds=5)
def merge_outputs(job: JobSpec) -> dict[str, int]:
    return merge_run(job)
