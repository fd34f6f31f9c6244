"""The `edit_catalog` flow: the library's `run_job`, with each step run as a Prefect task."""

from __future__ import annotations

from typing import Any

from prefect import flow

from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job
from stepedit_core.lifecycle.stops import ACTIVITY
from stepedit_tasks.steps import STEP_TASKS


@flow(name="edit_catalog", flow_run_name="{job.run_id}", log_prints=True)
def edit_catalog(job: JobSpec) -> dict[str, Any]:
    """Edit every clip of a catalog manifest; returns the run record (also in run.json)."""
    return run_job(job, wrappers=ACTIVITY.track(STEP_TASKS))  # a stop can name its step
