"""The data card beside sft.parquet (README.md): what the set holds and where it came from.

Its YAML header names sft.parquet as the train split, so the folder loads with
`datasets.load_dataset(FOLDER)` as well as `load_dataset("parquet", data_files=...)`.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from stepedit_core.dataset.choose_scorer import scorer_for
from stepedit_core.dataset.scorers import MARGIN_MAX, MARGIN_MIN

if TYPE_CHECKING:
    from stepedit_core.dataset.margin_set import MarginSpec

HEADER = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: sft.parquet
---
"""


def summarize(
    rows: list[dict[str, Any]], columns: list[str], spec: MarginSpec, record: dict[str, Any]
) -> dict[str, Any]:
    """Counts per attribute and margin, keep rates, and the run the set came from. `rows`:
    each pair's attribute, status, margin and kept flag."""
    per_attribute: dict[str, dict[str, Any]] = {}
    for attribute in (str(a) for a in spec.attributes):
        mine = [r for r in rows if r["attribute"] == attribute]
        scored = [r for r in mine if r["margin"] is not None]
        kept = sum(1 for r in mine if r["kept"])
        per_attribute[attribute] = {
            "pairs": len(mine),
            "failed": sum(1 for r in mine if r["status"] != "ok"),
            "scored": len(scored),
            "kept": kept,
            "keep_rate": round(kept / len(mine), 4) if mine else None,
            "margins": dict(sorted(Counter(r["margin"] for r in scored).items())),
        }
    kept = sum(a["kept"] for a in per_attribute.values())
    engine = record.get("engine", {})
    return {
        "run_id": spec.job.run_id,
        "source_manifest": spec.manifest_uri,
        "engine": engine,
        "scorer": _scorer_name(spec),
        "scoring": scorer_for(spec).describe(),
        "min_margin": spec.min_margin,
        "pairs": len(rows),
        "kept": kept,
        "keep_rate": round(kept / len(rows), 4) if rows else None,
        "attributes": per_attribute,
        "run": {
            "input_manifest_sha256": record.get("input_manifest", {}).get("sha256"),
            "run_digest": record.get("audit", {}).get("run_digest"),
            "package_version": record.get("package_version"),
            "ended_at": record.get("ended_at"),
        },
        "columns": columns,
    }


def _scorer_name(spec: MarginSpec) -> str:
    if spec.judge is not None:
        return f"judge ({spec.judge.kind} {spec.judge.model})"
    return spec.scorer + (" with DNSMOS" if spec.dnsmos else "")


def data_card(summary: dict[str, Any], dataset_header: bool = True) -> str:
    """The card's Markdown; `dataset_header`: with the YAML header that `datasets` reads
    (left out where the card is only shown, as in the Prefect artifact)."""
    engine = summary["engine"]
    lines = [
        HEADER if dataset_header else "",
        f"# Margin set `{summary['run_id']}`",
        "",
        "Pairs of the same clip, a neutral version and a version with one attribute edited, "
        f"each scored 1-10 by the `{summary['scorer']}` margin scorer; a pair is kept "
        f"(`kept`) when its margin is at least {summary['min_margin']:g}.",
        "",
        f"- source manifest: `{summary['source_manifest']}`",
        f"- made by run `{summary['run_id']}` (engine {engine.get('name')} "
        f"{engine.get('version')}, stepedit {summary['run']['package_version']}, "
        f"ended {summary['run']['ended_at']})",
        f"- run digest `{summary['run']['run_digest']}`; derived manifest sha256 "
        f"`{summary['run']['input_manifest_sha256']}`",
        f"- pairs: {summary['pairs']}, kept: {summary['kept']} "
        f"(keep rate {_rate(summary['keep_rate'])})",
        "",
        "## Pairs per attribute",
        "",
        "| attribute | pairs | failed | scored | kept | keep rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, a in summary["attributes"].items():
        lines.append(
            f"| `{name}` | {a['pairs']} | {a['failed']} | {a['scored']} | {a['kept']} | "
            f"{_rate(a['keep_rate'])} |"
        )
    margins = range(MARGIN_MIN, MARGIN_MAX + 1)
    lines += [
        "",
        "## Pairs per margin",
        "",
        "| attribute | " + " | ".join(str(m) for m in margins) + " |",
        "|---|" + "---|" * len(margins),
    ]
    for name, a in summary["attributes"].items():
        counts = " | ".join(str(a["margins"].get(m, 0)) for m in margins)
        lines.append(f"| `{name}` | {counts} |")
    lines += ["", "## How margins were scored", "", summary["scoring"]]
    lines += [
        "",
        "## Columns",
        "",
        ", ".join(f"`{c}`" for c in summary["columns"]),
        "",
        "Every pair is traceable: `neutral_record_sha256` / `edited_record_sha256` are the round "
        "records of the run they came from (`stepedit audit RUN PAIR_CLIP_ID`), and the sha256 "
        "columns are the audio files' own hashes.",
        "",
    ]
    return "\n".join(lines)


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"
