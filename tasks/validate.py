"""Refuse a run that can not start: bad manifest, unknown edit, engine not ready."""

from __future__ import annotations

from prefect import task

from stepedit_core.job import JobSpec
from stepedit_core.plan import Validation, validate_job


@task(name="validate", retries=0)
def validate(job: JobSpec) -> Validation:
    return validate_job(job)
