"""What each row should sound like, from the manifest's evaluation columns.

`eval_task` is emotion, style or paralinguistic; `eval_label` the target emotion or style (for
paralinguistic, the tag; the judge reads the tagged `target_text`). Rows without both are not
judged by a model judge; a row whose cells are not usable is skipped with a message naming the
row, the field and what was expected, and nothing else about the row changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.catalog.manifest import clean
from stepedit_core.judges.prompts import EMOTION_LABELS, STYLE_LABELS, TASKS

EVAL_COLUMNS = ("eval_task", "eval_label")
TASK_SPELLINGS = {"paralingustic": "paralinguistic"}  # the benchmark's own spelling
READ_COLUMNS = ("clip_id", "audio_uri", "language", "text", "target_text", *EVAL_COLUMNS)


@dataclass(frozen=True)
class EvalTarget:
    row_index: int
    clip_id: str
    task: str
    label: str
    language: str | None
    text: str | None
    target_text: str | None
    audio_uri: str | None


def target_of(index: int, row: dict) -> EvalTarget | None:
    """The row's target; None when the row has no evaluation cells; ValueError when they are
    not usable (the message names the row and the field)."""
    task, label = clean(row.get("eval_task")), clean(row.get("eval_label"))
    if task is None and label is None:
        return None
    task = TASK_SPELLINGS.get(task or "", task)
    if task not in TASKS:
        raise ValueError(
            f"row {index}: field 'eval_task' is {row.get('eval_task')!r}; expected one of "
            f"{', '.join(TASKS)}"
        )
    if label is None:
        raise ValueError(f"row {index}: field 'eval_label' is empty; expected the target {task}")
    label = label.lower() if task != "paralinguistic" else label
    allowed = {"emotion": EMOTION_LABELS, "style": STYLE_LABELS}.get(task)
    if allowed is not None and label not in allowed:
        raise ValueError(
            f"row {index}: field 'eval_label' is {label!r}; a judged {task} target is one of "
            f"{', '.join(allowed)}"
        )
    if task == "paralinguistic" and not clean(row.get("target_text")):
        raise ValueError(f"row {index}: field 'target_text' is empty; paralinguistic judging "
                         "reads the tagged text")  # fmt: skip
    return EvalTarget(
        index,
        str(clean(row.get("clip_id"))),
        task,
        label,
        clean(row.get("language")),
        clean(row.get("text")),
        clean(row.get("target_text")),
        clean(row.get("audio_uri")),
    )


def targets_in(table: pa.Table) -> tuple[dict[int, EvalTarget], list[str]]:
    """Targets by row index from a manifest table (a run's output manifest keeps every input
    column), and one message per row skipped."""
    if not all(c in table.column_names for c in EVAL_COLUMNS):
        return {}, []
    names = [c for c in READ_COLUMNS if c in table.column_names]
    targets: dict[int, EvalTarget] = {}
    skipped: list[str] = []
    for index, row in enumerate(table.select(names).to_pylist()):
        try:
            target = target_of(index, row)
        except ValueError as exc:
            skipped.append(str(exc))
            continue
        if target is not None:
            targets[index] = target
    return targets, skipped


def manifest_targets(uri: str) -> tuple[dict[int, EvalTarget], list[str]]:
    """The targets of an input manifest (local path or fsspec URI)."""
    with fsspec.open(uri, "rb") as handle:
        return targets_in(pq.read_table(handle))
