"""A checkout of Step-Audio-Edit-Benchmark as a stepedit manifest.

The benchmark ships three JSON Lines files under `data/`: `emotion.jsonl`, `style.jsonl` and
the paralinguistic one, spelt `paralingustic.jsonl` in the release. Each line names a speaker,
the speaker's prompt clip (`prompt_audio`, relative to the checkout) and its transcript
(`prompt_text`), the line to speak (`gen_text`, tags included for paralinguistic rows), the
language (`lang`), the task and the target (`task_sub`: an emotion, a style or a tag). The
release's `id` is not unique (every style id ends in `-idx`), so each row gets a `clip_id` of
its own, minted from its file and line (stable across imports); the original id is kept as
`benchmark_id` and the line as `benchmark_source`.

A line that can not be used is named by file, line number and field with what was expected;
by default one such line refuses the whole import (a benchmark with rows missing is another
benchmark), `skip_bad_lines` writes the good rows and lists the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.foundation.edits import EMOTIONS, PARALINGUISTIC_TAGS, STYLES
from stepedit_core.foundation.failures import RunRefused

TASKS = ("emotion", "style", "paralinguistic")
# task -> the file names it may have under data/ (the release spells one of them its own way)
TASK_FILES = {
    "emotion": ("emotion.jsonl",),
    "style": ("style.jsonl",),
    "paralinguistic": ("paralingustic.jsonl", "paralinguistic.jsonl"),
}
TASK_SPELLINGS = {"paralingustic": "paralinguistic"}
FIELDS = ("id", "speaker", "gen_text", "prompt_audio", "prompt_text", "lang", "task", "task_sub")
# what each field should hold, for messages
EXPECTED = {
    "id": "the benchmark's row id",
    "speaker": "the speaker's name",
    "gen_text": "the line to speak",
    "prompt_audio": "the speaker's prompt clip, a path relative to the checkout",
    "prompt_text": "the transcript of the prompt clip",
    "lang": "the language code (zh, en)",
    "task": "the file's task",
    "task_sub": "the target emotion, style or tag",
}
LABELS = {"emotion": EMOTIONS, "style": STYLES, "paralinguistic": PARALINGUISTIC_TAGS}
MANIFEST_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("audio_uri", pa.string()),
        ("text", pa.string()),
        ("target_text", pa.string()),
        ("language", pa.string()),
        ("speaker", pa.string()),
        ("eval_task", pa.string()),
        ("eval_label", pa.string()),
        ("benchmark_id", pa.string()),
        ("benchmark_source", pa.string()),
    ]
)
MAX_LISTED = 20  # problems printed in a refusal; the count says how many more


class BenchmarkError(RunRefused):
    """The checkout can not be imported; the message names every line that is wrong."""


class LineError(ValueError):
    """One unusable line: `str()` names the file, the line number and the field."""


@dataclass
class Imported:
    """What an import found: the manifest rows, the lines skipped and where the files were."""

    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # task -> file read

    def counts(self) -> dict[str, int]:
        counted = dict.fromkeys(self.files, 0)
        for row in self.rows:
            counted[row["eval_task"]] += 1
        return counted


def find_task_files(checkout: Path, tasks: Iterable[str] = TASKS) -> dict[str, Path]:
    """task -> its file under `checkout/data/` (or `checkout/` itself when it is the data
    folder). BenchmarkError naming the names looked for when one is missing."""
    if not checkout.is_dir():
        raise BenchmarkError(
            f"{checkout} is not a folder (expected a Step-Audio-Edit-Benchmark checkout)"
        )
    folders = [checkout / "data", checkout]
    found: dict[str, Path] = {}
    for task in tasks:
        if task not in TASK_FILES:
            raise BenchmarkError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        candidates = [folder / name for folder in folders for name in TASK_FILES[task]]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise BenchmarkError(
                f"{checkout} has no {task} file: looked for "
                + ", ".join(str(p.relative_to(checkout)) for p in candidates)
            )
        found[task] = path
    return found


def _name(path: Path, checkout: Path) -> str:
    """The file as the checkout names it (`data/style.jsonl`)."""
    try:
        return str(path.relative_to(checkout))
    except ValueError:
        return str(path)


def _field(record: dict, name: str, where: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        shown = "missing" if name not in record else f"{value!r}"
        raise LineError(
            f"{where}: field {name!r} is {shown}; expected {EXPECTED[name]} (a non-empty string)"
        )
    return value


def _prompt_audio(checkout: Path, relative: str, where: str) -> str:
    """The prompt clip's absolute path; LineError when it leaves the checkout or is absent."""
    candidate = Path(relative)
    root = checkout.resolve()
    resolved = (root / candidate).resolve()
    if candidate.is_absolute() or not resolved.is_relative_to(root):
        raise LineError(
            f"{where}: field 'prompt_audio' is {relative!r}; expected a path inside the checkout"
        )
    if not resolved.is_file():
        raise LineError(
            f"{where}: field 'prompt_audio' is {relative!r}; no such file under {checkout}"
        )
    return str(resolved)


def parse_line(text: str, task: str, path: Path, checkout: Path, line: int) -> dict:
    """One benchmark line as a manifest row (without its clip_id); LineError when unusable."""
    where = f"{_name(path, checkout)} line {line}"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise LineError(f"{where}: expected a JSON object with fields {', '.join(FIELDS)}")
    values = {name: _field(record, name, where) for name in FIELDS}
    source_task = values["task"].strip()
    if TASK_SPELLINGS.get(source_task, source_task) != task:
        raise LineError(
            f"{where}: field 'task' is {values['task']!r}; expected {task!r} in this file"
        )
    label = values["task_sub"].strip()
    if label not in LABELS[task]:
        raise LineError(
            f"{where}: field 'task_sub' is {values['task_sub']!r}; expected one of the model's "
            f"{task} options: {', '.join(LABELS[task])}"
        )
    if task == "paralinguistic" and label not in values["gen_text"]:
        raise LineError(
            f"{where}: field 'gen_text' does not hold the tag {label} that field 'task_sub' names"
        )
    return {
        "audio_uri": _prompt_audio(checkout, values["prompt_audio"].strip(), where),
        "text": values["prompt_text"],
        "target_text": values["gen_text"],  # as given: the clone speaks it character for character
        "language": values["lang"].strip(),
        "speaker": values["speaker"].strip(),
        "eval_task": task,
        "eval_label": label,
        "benchmark_id": values["id"],
        "benchmark_source": f"{_name(path, checkout)}:{line}",
    }


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a file, numbered from 1."""
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if text.strip():
                yield number, text


def read_benchmark(
    checkout: str | Path, tasks: Iterable[str] = TASKS, per_label: int | None = None
) -> Imported:
    """Every usable line of the task files as a manifest row, and one message per other line.

    `per_label` keeps the first N lines of each (task, language, speaker, label), so a trial
    import stays balanced the way the benchmark's scores are averaged.
    """
    checkout = Path(checkout)
    imported = Imported()
    kept: dict[tuple[str, ...], int] = {}
    for task, path in find_task_files(checkout, tasks).items():
        imported.files[task] = str(path)
        for number, text in _lines(path):
            try:
                row = parse_line(text, task, path, checkout, number)
            except LineError as exc:
                imported.problems.append(str(exc))
                continue
            key = (task, row["language"], row["speaker"], row["eval_label"])
            if per_label is not None and kept.get(key, 0) >= per_label:
                continue
            kept[key] = kept.get(key, 0) + 1
            imported.rows.append({"clip_id": f"{task}-{number:05d}", **row})
    return imported


def refusal(problems: list[str]) -> str:
    shown = problems[:MAX_LISTED]
    more = len(problems) - len(shown)
    lines = [f"{len(problems)} unusable line(s):", *(f"  {p}" for p in shown)]
    if more:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def write_manifest(rows: list[dict], out: str) -> None:
    """The rows as a Parquet manifest at `out` (a local path or an fsspec URI)."""
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    if "://" not in out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    with fsspec.open(out, "wb") as handle:
        pq.write_table(table, handle)


def import_benchmark(
    checkout: str | Path,
    out: str,
    tasks: Iterable[str] = TASKS,
    per_label: int | None = None,
    skip_bad_lines: bool = False,
) -> Imported:
    """Read the checkout and write the manifest; BenchmarkError (nothing written) when a line
    is unusable, unless `skip_bad_lines`, or when no line is usable."""
    if per_label is not None and per_label < 1:
        raise BenchmarkError(f"per_label must be at least 1, got {per_label}")
    imported = read_benchmark(checkout, tasks, per_label)
    if imported.problems and not skip_bad_lines:
        raise BenchmarkError(refusal(imported.problems) + "\nnothing written")
    if not imported.rows:
        raise BenchmarkError(f"no usable line in {', '.join(imported.files.values())}")
    write_manifest(imported.rows, out)
    return imported
