"""The run summary as Prefect markdown: the same counts as run.json and the command line."""

from __future__ import annotations

from typing import Any


def artifact_key(run_id: str, kind: str = "run") -> str:
    # Prefect artifact keys allow lowercase letters, digits and dashes only
    cleaned = "".join(c if c.isalnum() else "-" for c in run_id.lower()).strip("-")
    return f"stepedit-{kind}-{cleaned or 'run'}"


def summary_text(record: dict[str, Any]) -> str:
    """The summary `stepedit run` prints: the same counts as run.json and the artifact."""
    counts = record["counts"]
    lines = []
    if record.get("nothing_to_do"):
        lines.append(
            f"run {record['run_id']} already finished at {record['ended_at']}: nothing to do "
            "(pass --overwrite to start it afresh)"
        )
    lines.append(
        f"run {record['run_id']}: {counts['rows']} rows, {counts['ok']} ok, "
        f"{counts['failed']} failed ({counts['refused_at_plan']} refused at plan time)"
    )
    lines += [f"  {code}: {n}" for code, n in record["errors_by_code"].items()]
    rounds = record.get("clip_rounds")
    if rounds and rounds["resumed"]:
        lines.append(
            f"attempt {record.get('attempt')}: {rounds['done_now']} clip-rounds done now, "
            f"{rounds['resumed']} resumed from earlier attempts"
        )
    lines.append(f"output manifest: {record['outputs']['manifest']}")
    if counts["failed"]:
        lines.append(
            f"{counts['failed']} failed rows: their failure records (error_code, error) are the "
            "rows with status 'failed' in the output manifest"
        )
    if record["outputs"].get("report"):
        lines.append(f"review page: {record['outputs']['report']}")
    return "\n".join(lines) + "\n"


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
    report = record["outputs"].get("report")
    if report:
        link = report if "://" in report else f"file://{report}"
        lines += ["", f"Review page: [{report}]({link})"]
    return "\n".join(lines) + "\n"
