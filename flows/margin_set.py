"""The `margin_set` flow: the margin set's run as an `edit_catalog` subflow, then the pairs
scored and written as a dataset (stepedit_core.dataset); the data card becomes the flow run's
Markdown artifact."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from stepedit_core.dataset import MarginSpec, build_margin_set
from stepedit_core.dataset.card import data_card
from stepedit_flows.edit_catalog import edit_catalog
from stepedit_tasks.summary import artifact_key


@flow(name="margin_set", flow_run_name="{spec.job.run_id}", log_prints=True)
def margin_set(spec: MarginSpec) -> dict[str, Any]:
    """Make (or resume) a margin set; returns its summary (also in its data card)."""
    summary = build_margin_set(spec, run=edit_catalog)
    create_markdown_artifact(
        key=artifact_key(spec.job.run_id, kind="margin-set"),
        markdown=data_card(summary, dataset_header=False),
        description=f"stepedit margin set {spec.job.run_id}",
    )
    return summary


def summary_text(summary: dict[str, Any]) -> str:
    lines = [
        f"margin set {summary['run_id']}: {summary['pairs']} pair(s), {summary['kept']} kept "
        f"at margin >= {summary['min_margin']:g} ({summary['scorer']} scorer)"
    ]
    for name, a in summary["attributes"].items():
        margins = ", ".join(f"{m}: {n}" for m, n in a["margins"].items()) or "none scored"
        lines.append(
            f"  {name}: {a['kept']} of {a['pairs']} kept, {a['failed']} failed; margins {margins}"
        )
    lines.append(f"set: {summary['sft']}")
    lines.append(f"data card: {summary['card']}")
    if summary.get("report"):
        lines.append(f"review page: {summary['report']}")
    return "\n".join(lines) + "\n"
