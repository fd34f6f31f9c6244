"""The benchmark protocol (`stepedit eval run`): the jobs that make iteration 0 and the editing
rounds of every benchmark row, run with the editing machinery, then judged.

- Round 0 clones `target_text` (paralinguistic tags left out) in the voice of the row's
  `audio_uri` (the speaker's prompt, transcript in `text`); with `--post-process COLUMN` round 0
  is instead another system's audio, read from that column, and nothing is cloned.
- Rounds 1..N edit toward `eval_label` (`emotion=<label>` or `style=<label>`); paralinguistic rows
  get one round that inserts the tags of `target_text`. So they run as a job of their own,
  `<run id>-paralinguistic`, with one iteration.
- `--mode chain` gives each round the previous round's audio as the voice prompt, `prompt-fixed`
  the round-0 audio.

Each job is a plain run (its own run id under `--out`, resumable, verifiable); its manifest,
written under `OUT/_eval/<run id>/`, is the benchmark manifest with the `edit` column (and for
post-processing `audio_uri` and `text`) filled in.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.catalog.manifest import clean
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.judges.prompts import TAG_PATTERN
from stepedit_core.judges.targets import target_of

MODES = {"chain": "chain", "prompt-fixed": "fixed"}  # --mode -> the engine's prompt mode
PARALINGUISTIC_SUFFIX = "-paralinguistic"


@dataclass(frozen=True)
class ProtocolJob:
    run_id: str
    manifest_uri: str
    iterations: int
    rows: int


def _edit_cell(task: str, label: str, clone: bool) -> str:
    edit = "paralinguistic" if task == "paralinguistic" else f"{task}={label}"
    return f"clone;{edit}" if clone else edit


def untagged(text: str) -> str:
    """The text without its bracketed tags, with no doubled or stray spaces left behind."""
    return " ".join(TAG_PATTERN.sub(" ", text).split())


def protocol_jobs(
    manifest_uri: str, out: str, run_id: str, iterations: int, post_process: str | None = None
) -> list[ProtocolJob]:
    """Write the protocol's manifests and return the jobs to run (refuses unusable rows)."""
    with fsspec.open(manifest_uri, "rb") as handle:
        table = pq.read_table(handle)
    if post_process is not None and post_process not in table.column_names:
        raise RunRefused(
            f"--post-process {post_process}: the manifest has no column {post_process!r} "
            f"(columns: {', '.join(table.column_names)})"
        )
    rows = table.to_pylist()
    problems, groups = [], {"main": [], "paralinguistic": []}
    for index, row in enumerate(rows):
        try:
            target = target_of(index, row)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if target is None:
            problems.append(f"row {index}: fields 'eval_task' and 'eval_label' are empty; "
                            "every row of a benchmark manifest needs both")  # fmt: skip
            continue
        if not clean(row.get("target_text")):
            problems.append(f"row {index}: field 'target_text' is empty; expected the line "
                            "to speak")  # fmt: skip
            continue
        derived = dict(row, eval_task=target.task)
        if post_process is None:
            derived["edit"] = _edit_cell(target.task, target.label, clone=True)
        else:
            other = clean(row.get(post_process))
            if other is None:
                problems.append(f"row {index}: field {post_process!r} is empty; expected the "
                                "other system's audio")  # fmt: skip
                continue
            derived["audio_uri"] = other
            derived["text"] = untagged(str(row["target_text"]))  # what that system spoke
            derived["edit"] = _edit_cell(target.task, target.label, clone=False)
        key = "paralinguistic" if target.task == "paralinguistic" else "main"
        groups[key].append(derived)
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise RunRefused("; ".join(problems[:5]) + more)
    jobs = []
    folder = posixpath.join(out.rstrip("/"), "_eval", run_id)
    fs, root = fsspec.core.url_to_fs(folder)
    fs.makedirs(root, exist_ok=True)
    for key, group in groups.items():
        if not group:
            continue
        name = run_id if key == "main" else run_id + PARALINGUISTIC_SUFFIX
        columns = list(dict.fromkeys(c for r in group for c in r))
        derived_table = pa.Table.from_pylist(
            [{c: r.get(c) for c in columns} for r in group],
            pa.schema([(c, _type(table, c)) for c in columns]),
        )
        path = posixpath.join(folder, f"{key}.parquet")
        with fsspec.open(path, "wb") as handle:
            pq.write_table(derived_table, handle)
        rounds = iterations if key == "main" else 1
        jobs.append(ProtocolJob(name, path, rounds, len(group)))
    return jobs


def _type(table: pa.Table, column: str) -> pa.DataType:
    return table.schema.field(column).type if column in table.column_names else pa.string()
