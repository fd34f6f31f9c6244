"""Write run.json and publish the run summary as a Prefect markdown artifact."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact

from stepedit_core.job import JobSpec
from stepedit_core.plan import Plan, Validation, write_run_record


@task(name="summarize")
def summarize(
    job: JobSpec,
    validation: Validation,
    plan: Plan,
    counts: dict[str, int],
    started: float,
    shards: list[dict[str, Any]],
) -> dict[str, Any]:
    record = write_run_record(job, validation, plan, counts, started, shards)
    create_markdown_artifact(
        key=_artifact_key(job.run_id),
        markdown=summary_markdown(record),
        description=f"stepedit run {job.run_id}",
    )
    return record


def _artifact_key(run_id: str) -> str:
    # Prefect artifact keys allow lowercase letters, digits and dashes only
    cleaned = "".join(c if c.isalnum() else "-" for c in run_id.lower()).strip("-")
    return f"stepedit-run-{cleaned or 'run'}"


def summary_markdown(record: dict[str, Any]) -> str:
    counts = record["counts"]
    edits = ";".join(record["parameters"]["edits"]) or "(per row)"
    lines = [
        f"# stepedit run `{record['run_id']}`",
        "",
        f"Engine **{record['engine']['name']}** {record['engine']['version']}, "
        f"{record['parameters']['iterations']} round(s), edit `{edits}`.",
        "",
        "| rows | ok | failed | refused at plan | shards | seconds |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {counts['rows']} | {counts['ok']} | {counts['failed']} | {counts['refused_at_plan']} "
        f"| {counts['shards']} | {record['seconds']} |",
    ]
    if record["errors_by_code"]:
        lines += ["", "| error code | rows |", "|---|---:|"]
        lines += [f"| `{code}` | {n} |" for code, n in record["errors_by_code"].items()]
    lines += ["", f"Output manifest: `{record['outputs']['manifest']}`"]
    return "\n".join(lines) + "\n"
