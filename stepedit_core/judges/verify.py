"""`stepedit verify` for verdicts: each one's seal, its link to the round (or source) it judged,
and the sealed digest over a judging pass's verdicts (`RUN/eval/judgements.json`)."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from stepedit_core.audit.records import (
    RUN_VERDICTS,
    audit_key,
    record_digest,
    run_relative,
    seal_line,
    verdict_group,
    verdicts_digest,
)
from stepedit_core.foundation.store import RunStore


def check_verdicts(
    store: RunStore, report: Any, found: dict[tuple, dict], audit: dict[str, Any]
) -> None:
    """Add a mismatch to `report` (a VerifyReport) for each verdict that is altered or judged
    a record the run does not hold, and for verdict sets that do not match their digests
    (run.json's `audit` for the run's own, eval/judgements.json for `stepedit judge`'s).
    `found`: (row_index, iteration) -> round record."""
    parts = store.list(store.judgements_dir)
    if audit.get("verdicts_digest") and not parts:
        report.add(
            "verdicts_missing",
            run_relative(store, store.judgements_dir),
            detail="run.json records verdicts",
        )
    if not parts:
        return
    links = {r.get("record_sha256") for r in found.values()}
    first: dict[int, dict] = {}
    for (row, iteration), record in found.items():
        if row not in first or iteration < first[row]["iteration"]:
            first[row] = record
    links |= {r.get("input_sha256") for r in first.values()}  # iteration 0: the source file
    count = 0
    by_prefix: dict[str, list[str]] = {}
    for part in parts:
        rel = run_relative(store, part)
        try:
            rows = store.read_table(part).to_pylist()
        except (pa.ArrowException, OSError, ValueError) as exc:
            report.add("verdicts_unreadable", rel, detail=f"{type(exc).__name__}: {exc}")
            continue
        prefix = verdict_group(part)
        for row in rows:
            count += 1
            by_prefix.setdefault(prefix, []).append(row.get("record_sha256") or "")
            where = f"iteration {row.get('iteration')} {row.get('task')}"
            if record_digest(row) != row.get("record_sha256"):
                report.add("verdict_altered", rel, row.get("clip_id"), f"{where}: seal broken")
            elif row.get("prev_record_sha256") not in links:
                report.add(
                    "verdict_unlinked",
                    rel,
                    row.get("clip_id"),
                    f"{where}: judged a record this run does not hold",
                )
    report.checked["verdicts"] = count
    recorded = audit.get("verdicts_digest")
    if recorded and verdicts_digest(by_prefix.get(RUN_VERDICTS, [])) != recorded:
        report.add(
            "verdicts_digest_mismatch",
            run_relative(store, store.judgements_dir),
            detail=f"the run's verdicts do not digest to run.json's ({audit.get('verdicts')} "
            f"recorded, {len(by_prefix.get(RUN_VERDICTS, []))} found)",
        )
    _check_digest(store, report, by_prefix)


def _check_digest(store: RunStore, report: Any, by_prefix: dict[str, list[str]]) -> None:
    path = store.eval_file("judgements.json")
    if not store.exists(path):
        return
    data = store.read_bytes(path)
    seal_path = path + ".sha256"
    sealed = store.read_bytes(seal_path).decode().split()[0] if store.exists(seal_path) else ""
    key = audit_key() if sealed.startswith("hmac-sha256:") else None
    if sealed != seal_line(data, key).split()[0]:
        report.add("judgements_altered", "eval/judgements.json", detail="does not match its seal")
        return
    record = json.loads(data)
    hashes = by_prefix.get(record.get("judge_id", ""), [])
    if verdicts_digest(hashes) != record.get("verdicts_digest"):
        report.add(
            "judgements_altered",
            "eval/judgements.json",
            detail=f"the judge's {len(hashes)} verdicts do not digest to the recorded digest "
            f"({record.get('verdicts')} verdicts recorded)",
        )


def clip_verdicts(store: RunStore, clip_id: str) -> list[dict[str, Any]]:
    """Every verdict on one clip (all judges), each with whether its seal holds."""
    found = []
    for part in store.list(store.judgements_dir):
        table = store.read_table(part)
        mask = pa.compute.equal(table.column("clip_id"), clip_id)
        for row in table.filter(mask).to_pylist():
            row["seal_ok"] = record_digest(row) == row.get("record_sha256")
            found.append(row)
    return sorted(found, key=lambda v: (v["iteration"], v["judge"], v["model"], v["task"]))


def format_verdicts(verdicts: list[dict[str, Any]]) -> list[str]:
    lines = []
    for v in verdicts:
        said = v.get("answer") if v.get("status") == "ok" else f"{v.get('error_code')}"
        mark = "" if v.get("seal_ok") else "  SEAL BROKEN"
        lines.append(
            f"  verdict  iteration {v['iteration']}  {v['judge']} {v['model']}: {v['task']} "
            f"{v['label']!r} -> {said!r} ({'landed' if v.get('correct') else 'not landed'})"
            f"{mark}"
        )
        if v.get("stop_reason"):
            lines.append(f"           {v['stop_reason']}")
    return lines
