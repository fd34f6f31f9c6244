"""Names of scheduled runs: deployment name -> run id, artifact key. No Prefect import, so the
CLI can check a name before loading Prefect."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from stepedit_core.lifecycle.job import RUN_ID

FLOW_NAME = "scheduled_edit_catalog"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# Run ids are at most 128 characters: the prefix leaves room for "-STAMP" and "-" + 8 hex digits.
MAX_NAME_LENGTH = 128 - len("-20261127T020000Z") - len("-0123abcd")
ARTIFACT_PREFIX = "stepedit-schedule-"


def check_name(name: str) -> str:
    """A deployment name usable as a run-id prefix; raises ValueError otherwise."""
    if len(name) > MAX_NAME_LENGTH or not RUN_ID.match(name):
        raise ValueError(
            f"name {name!r} must be 1-{MAX_NAME_LENGTH} characters of letters, digits, "
            "'.', '_', '-' (it prefixes the run id of every scheduled run)"
        )
    return name


def stamped_run_id(name: str, scheduled: datetime, flow_run_id: str | None = None) -> str:
    """NAME-YYYYMMDDTHHMMSSZ (UTC), plus -XXXXXXXX from the flow run id when given."""
    stamp = scheduled.astimezone(timezone.utc).strftime(STAMP_FORMAT)
    run_id = f"{check_name(name)}-{stamp}"
    if flow_run_id:
        run_id += "-" + flow_run_id.replace("-", "")[:8]
    return run_id


def artifact_key(name: str) -> str:
    """One artifact key per deployment: Prefect keeps each run's counts as a new version.
    (Keys allow lowercase letters, digits and dashes only.)"""
    cleaned = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"{ARTIFACT_PREFIX}{cleaned or 'run'}"
