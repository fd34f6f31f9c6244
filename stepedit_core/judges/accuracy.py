"""Accuracy per (iteration, language, task, label) from verdicts, as a table and as Markdown.

Answers outside a task's label set count as wrong and are counted (`out_of_label`); verdicts
that failed (`judge_failed`, `judge_unparsable`) are left out of `clips` and counted in
`judge_failures`, so no failure hides inside an accuracy. The Markdown table and the charts
average the labels of a (iteration, language, task) with equal weight, as the paper does.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa

ACCURACY_SCHEMA = pa.schema(
    [
        ("iteration", pa.int32()),
        ("language", pa.string()),
        ("task", pa.string()),
        ("label", pa.string()),
        ("clips", pa.int64()),
        ("correct", pa.int64()),
        ("out_of_label", pa.int64()),
        ("accuracy", pa.float64()),
        ("mean_score", pa.float64()),
        ("judge_failures", pa.int64()),
    ]
)
SCORED_TASKS = ("paralinguistic",)


def accuracy_rows(verdicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for v in verdicts:
        key = (int(v["iteration"]), v.get("language") or "", v["task"], v["label"])
        groups[key].append(v)
    rows = []
    for (iteration, language, task, label), group in sorted(groups.items()):
        ok = [v for v in group if v["status"] == "ok"]
        correct = sum(1 for v in ok if v["correct"])
        scores = [v["score"] for v in ok if v.get("score") is not None]
        rows.append(
            {
                "iteration": iteration,
                "language": language,
                "task": task,
                "label": label,
                "clips": len(ok),
                "correct": correct,
                "out_of_label": sum(1 for v in ok if v.get("out_of_label")),
                "accuracy": correct / len(ok) if ok else None,
                "mean_score": sum(scores) / len(scores)
                if scores and task in SCORED_TASKS
                else None,
                "judge_failures": len(group) - len(ok),
            }
        )
    return rows


def accuracy_table(verdicts: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(accuracy_rows(verdicts), ACCURACY_SCHEMA)


def by_task(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
    """(task, language) -> iteration -> {accuracy, mean_score, clips}, labels weighted equally."""
    cells: dict[tuple[str, str, int], list[dict]] = defaultdict(list)
    for row in rows:
        cells[(row["task"], row["language"], row["iteration"])].append(row)
    out: dict[tuple[str, str], dict[int, dict[str, float]]] = defaultdict(dict)
    for (task, language, iteration), group in sorted(cells.items()):
        accs = [r["accuracy"] for r in group if r["accuracy"] is not None]
        scores = [r["mean_score"] for r in group if r["mean_score"] is not None]
        out[(task, language)][iteration] = {
            "accuracy": sum(accs) / len(accs) if accs else None,
            "mean_score": sum(scores) / len(scores) if scores else None,
            "clips": sum(r["clips"] for r in group),
            "out_of_label": sum(r["out_of_label"] for r in group),
            "judge_failures": sum(r["judge_failures"] for r in group),
        }
    return dict(out)


def markdown(rows: list[dict[str, Any]]) -> str:
    """Per task and language, a line per iteration (labels averaged), then the label rows."""
    lines = [
        "| task | language | iteration | clips | accuracy | mean score | out of label "
        "| judge failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (task, language), iterations in by_task(rows).items():
        for iteration, cell in sorted(iterations.items()):
            lines.append(
                f"| {task} | {language or '-'} | {iteration} | {cell['clips']} "
                f"| {_pct(cell['accuracy'])} | {_num(cell['mean_score'])} "
                f"| {cell['out_of_label']} | {cell['judge_failures']} |"
            )
    lines += ["", "| task | language | iteration | label | clips | correct | accuracy |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| {row['task']} | {row['language'] or '-'} | {row['iteration']} | {row['label']} "
            f"| {row['clips']} | {row['correct']} | {_pct(row['accuracy'])} |"
        )
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
