"""The flow that Prefect deployments of stepedit run: `scheduled_edit_catalog`.

A deployment holds a run-id prefix (`name`) and every other JobSpec field (`job`); each flow run
stamps its own run id from its scheduled time, runs `edit_catalog` as a subflow and ends in a
state that alerts can hang on:

- every row ok: Completed;
- some rows failed (at plan time or while editing): **Failed**, with the run fully written
  (manifest.parquet, run.json) and the counts in the state message and in a table artifact;
- refused before starting (bad manifest, engine not ready) or crashed: Failed with the error.

`job` is typed: `ScheduledJob` is generated from JobSpec's declared settings (every one but
run_id, each with its type, default and help), so Prefect checks a deployment's parameters when
it is registered and its UI shows them as a form, and a setting added to JobSpec later reaches
scheduled runs without touching this module. Scheduled runs are incremental unless the
deployment says otherwise.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.context import FlowRunContext
from prefect.states import Completed, Failed, State
from pydantic import BaseModel

from stepedit_core.foundation.settings import flat_model
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.ownership import mark_run_folder
from stepedit_flows.run_names import FLOW_NAME, artifact_key, stamped_run_id


class RunIdTaken(Exception):
    """Both candidate run ids already belong to other flow runs."""


ScheduledJob = flat_model(
    JobSpec,
    "ScheduledJob",
    exclude=("run_id",),
    # deployments registered before the switch existed hold no `incremental` field
    defaults={"incremental": True},
    doc="The settings of a scheduled edit job: every run setting but run_id, which each "
    "scheduled run stamps for itself.",
)


def scheduled_job(job: dict[str, Any] | BaseModel) -> BaseModel:
    """A deployment's `job` parameter as a ScheduledJob; refuses names JobSpec does not know (a
    typo in a deployment's parameters would otherwise be dropped without a word)."""
    if isinstance(job, ScheduledJob):
        return job
    values = job.model_dump() if isinstance(job, BaseModel) else dict(job)
    if "run_id" in values:
        raise ValueError("job must not set run_id: each scheduled run stamps its own")
    unknown = sorted(set(values) - set(ScheduledJob.model_fields))
    if unknown:
        raise ValueError(f"unknown job parameter(s): {', '.join(unknown)}")
    return ScheduledJob(**values)


def job_spec(job: dict[str, Any] | BaseModel, run_id: str) -> JobSpec:
    """The JobSpec of one scheduled run from its deployment's `job` parameter."""
    checked = scheduled_job(job)
    values = {name: getattr(checked, name) for name in type(checked).model_fields}
    return JobSpec(**values, run_id=run_id)


def claim_run_id(
    out: str,
    name: str,
    scheduled: datetime,
    flow_run_id: str,
    auto_scheduled: bool,
) -> str:
    """The run id this flow run writes to, never one another flow run has used.

    Prefect creates at most one auto-scheduled run per deployment and schedule slot, so those get
    the plain NAME-STAMP. Runs started by hand or through the API may share a second: they always
    carry part of their flow run id. Either way a folder that already holds another flow run's
    claim (or an older run with no claim) is left alone and the flow-run-id form is used.
    """
    candidates = [stamped_run_id(name, scheduled, flow_run_id)]
    if auto_scheduled:
        candidates.insert(0, stamped_run_id(name, scheduled))
    for run_id in candidates:
        store = RunStore(out, run_id)
        claim = store.scheduled_claim
        if not store.exists(store.root):
            store.write_json(
                claim,
                {
                    "deployment": name,
                    "flow_run_id": flow_run_id,
                    "scheduled_time": scheduled.astimezone(timezone.utc).isoformat(),
                },
            )
            mark_run_folder(store)  # the folder is this run's: the run must not refuse it
            return run_id
        if store.exists(claim) and store.read_json(claim).get("flow_run_id") == flow_run_id:
            return run_id  # a retry of this same flow run: carry on in its own folder
    raise RunIdTaken(f"run ids {candidates} under {out} already belong to other flow runs")


def outcome(record: dict[str, Any]) -> State:
    """Completed when every row is ok, Failed when any row failed; the message has the counts."""
    counts = record["counts"]
    message = (
        f"run {record['run_id']}: {counts['rows']} rows, {counts['ok']} ok, "
        f"{counts['failed']} failed"
    )
    if record["errors_by_code"]:
        message += " (" + ", ".join(f"{c}: {n}" for c, n in record["errors_by_code"].items()) + ")"
    if counts["failed"]:
        return Failed(message=message, data=record)
    return Completed(message=message, data=record)


def counts_row(record: dict[str, Any]) -> dict[str, Any]:
    counts = record["counts"]
    return {
        "run_id": record["run_id"],
        "rows": counts["rows"],
        "ok": counts["ok"],
        "failed": counts["failed"],
        "refused_at_plan": counts["refused_at_plan"],
        "reused": counts.get("reused", 0),  # incremental: ok rows pointing at earlier outputs
        "errors": ", ".join(f"{c}: {n}" for c, n in record["errors_by_code"].items()),
        "manifest": record["outputs"]["manifest"],
    }


def _rename_flow_run(flow_run_id: str, run_id: str) -> None:
    # The flow run carries the run id as its name, so the Prefect UI and `stepedit deployments`
    # show which OUT/RUN_ID folder a run wrote.
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id, name=run_id)


@flow(name=FLOW_NAME, log_prints=True)
def scheduled_edit_catalog(job: ScheduledJob, name: str | None = None) -> State:
    """Run `edit_catalog` on a run id of its own: NAME-<scheduled time, UTC>[-<flow run>].

    `job`: JobSpec fields except run_id. `name`: run-id prefix, default the deployment's name."""
    from prefect.runtime import deployment

    from stepedit_flows.edit_catalog import edit_catalog

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("scheduled_edit_catalog must run as a Prefect flow run")
    name = name or deployment.name
    if not name:
        raise ValueError("no run-id prefix: pass `name` or run the flow from a deployment")
    flow_run = context.flow_run
    scheduled = flow_run.expected_start_time or datetime.now(timezone.utc)
    job_spec(job, stamped_run_id(name, scheduled))  # refuse bad parameters before claiming
    run_id = claim_run_id(job.out, name, scheduled, str(flow_run.id), bool(flow_run.auto_scheduled))
    _rename_flow_run(str(flow_run.id), run_id)
    get_run_logger().info("scheduled run of %s writes %s", name, RunStore(job.out, run_id).root)
    record = edit_catalog(job_spec(job, run_id))
    create_table_artifact(
        table=[counts_row(record)],
        key=artifact_key(name),
        description=f"stepedit scheduled run {run_id}",
    )
    return outcome(record)
