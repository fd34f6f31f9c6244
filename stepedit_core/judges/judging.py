"""Judging a finished run: every round (and the source audio as iteration 0), exactly once.

The unit of commit mirrors the run's: for each part of `iterations/`, one part of verdicts,
`judgements/<judge id>-<part name>`, written whole after every verdict of that part is in. A
crashed pass resumes with the parts not yet written; the verdict cache (`OUT/_judge_cache/`)
means that the requests answered before the crash are not sent again either. The judge id
names the judge, its model and prompts, so judging with another model starts its own parts.

Afterwards `RUN/eval/` holds `accuracy.parquet`, `accuracy.md` and `judgements.json` (the
digest over this judge's verdicts, sealed like run.json), and the review page is rebuilt with
the accuracy charts.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stepedit_core.audit.records import audit_key, seal_line, verdicts_digest
from stepedit_core.catalog.records import round_flac
from stepedit_core.executors import Executor
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.store import RunStore
from stepedit_core.judges.accuracy import accuracy_rows, accuracy_table, markdown
from stepedit_core.judges.judge import Judge, JudgeTask
from stepedit_core.judges.objective import OBJECTIVE_EDITS
from stepedit_core.judges.stage import JudgeTasks
from stepedit_core.judges.targets import EvalTarget, targets_in
from stepedit_core.judges.verdict import Verdict, verdict_table

PARTS_PER_CALL = 8  # iteration parts judged per executor call (about 2,000 rounds)


@dataclass
class JudgeOutcome:
    judge_id: str
    verdicts: int = 0  # verdicts of this judge on the run (all parts)
    judged_now: int = 0
    requests_saved: int = 0  # answered from the cache
    failed: int = 0
    parts_written: int = 0
    parts_resumed: int = 0
    skipped_rows: list[str] = field(default_factory=list)
    accuracy: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def judge_id(judge: Judge) -> str:
    material = json.dumps([judge.kind, judge.model, judge.prompts.templates], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def judge_run(
    out: str,
    run_id: str,
    judge: Judge,
    executor: Executor,
    progress: Callable[[int, int], None] | None = None,
) -> JudgeOutcome:
    """Judge every round of a finished run that has a target (model judges: `eval_task` and
    `eval_label`; objective: its signal edits); write verdicts, accuracy and the page."""
    store = RunStore(out, run_id)
    if not store.exists(store.run_json):
        raise RunRefused(
            f"{store.uri(store.root)} has no run.json: judge a finished run "
            "(run or resume it with `stepedit run` first)"
        )
    manifest = store.read_table(store.manifest)
    targets, skipped = targets_in(manifest)
    if judge.kind != "objective" and not targets:
        raise RunRefused(
            f"no row of {store.uri(store.manifest)} has both eval_task and eval_label: "
            "nothing for a model judge to judge" + (f" ({skipped[0]})" if skipped else "")
        )
    sources = dict(enumerate(manifest.column("audio_uri").to_pylist()))
    jid = judge_id(judge)
    outcome = JudgeOutcome(judge_id=jid, skipped_rows=skipped)
    written = {posixpath.basename(p) for p in store.list(store.judgements_dir, prefix=jid)}
    pending = []
    for part in store.list(store.iterations_dir):
        if f"{jid}-{posixpath.basename(part)}" in written:
            outcome.parts_resumed += 1
        else:
            pending.append(part)
    for start in range(0, len(pending), PARTS_PER_CALL):
        batch = pending[start : start + PARTS_PER_CALL]
        tasks: list[tuple[str, JudgeTask]] = []
        for part in batch:
            found = part_tasks(store, part, judge, targets, sources, outcome.skipped_rows)
            tasks += [(part, t) for t in found]
        by_part: dict[str, list[Verdict]] = defaultdict(list)
        # a remote executor hands back copies: a task is found again by what it judged
        part_of = {(t.row_index, t.round, t.task): p for p, t in tasks}
        for task in executor.run([JudgeTasks(judge)], [t for _, t in tasks]):
            by_part[part_of[(task.row_index, task.round, task.task)]].append(task.verdict)
        for part in batch:
            verdicts = sorted(by_part.get(part, []), key=lambda v: (v.row_index, v.round, v.task))
            path = store.judgement_part(f"{jid}-{posixpath.basename(part)}")
            store.write_table(path, verdict_table(verdicts))
            outcome.parts_written += 1
            outcome.judged_now += len(verdicts)
            outcome.requests_saved += sum(1 for v in verdicts if v.cached)
            if progress is not None:
                progress(start + batch.index(part) + 1, len(pending))
    finish(store, jid, judge, outcome)
    return outcome


def read_verdicts(store: RunStore, prefix: str = "") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in store.list(store.judgements_dir, prefix=prefix):
        rows += store.read_table(path).to_pylist()
    return rows


def finish(store: RunStore, jid: str, judge: Judge, outcome: JudgeOutcome) -> None:
    """Accuracy table, its Markdown and the sealed digest of this judge's verdicts."""
    verdicts = read_verdicts(store, jid)
    outcome.verdicts = len(verdicts)
    outcome.failed = sum(1 for v in verdicts if v["status"] != "ok")
    rows = accuracy_rows(verdicts)
    outcome.accuracy = rows
    store.write_table(store.eval_file("accuracy.parquet"), accuracy_table(verdicts))
    store.write_bytes(store.eval_file("accuracy.md"), markdown(rows).encode())
    record = {
        "judge_id": jid,
        "judge": judge.kind,
        "model": judge.model,
        "prompts_sha256": {
            k: hashlib.sha256(v.encode()).hexdigest() for k, v in judge.prompts.templates.items()
        },
        "verdicts": len(verdicts),
        "verdicts_digest": verdicts_digest([v["record_sha256"] or "" for v in verdicts]),
        "skipped_rows": outcome.skipped_rows,
    }
    data = (json.dumps(record, indent=2) + "\n").encode()
    store.write_bytes(store.eval_file("judgements.json"), data)
    store.write_bytes(
        store.eval_file("judgements.json.sha256"),
        seal_line(data, audit_key()).replace("run.json", "judgements.json").encode(),
    )


def part_tasks(
    store: RunStore,
    part: str,
    judge: Judge,
    targets: dict[int, EvalTarget],
    sources: dict[int, str],
    notes: list[str],
) -> list[JudgeTask]:
    """The tasks of one iterations part: each ok round, and the source of each clip whose
    first round it holds (a clone round 0 is itself iteration 0)."""
    # whole parts: small now that round audio is referenced; older parts hold the bytes
    records = store.read_table(part).to_pylist()
    for rec in records:  # the round's bytes, read from the object its record references
        rec["audio_flac"] = round_flac(rec, store.run_uri) if rec["status"] == "ok" else None
    by_row: dict[int, list[dict]] = defaultdict(list)
    for rec in records:
        by_row[rec["row_index"]].append(rec)
    tasks: list[JudgeTask] = []
    for row_index, recs in sorted(by_row.items()):
        recs.sort(key=lambda r: r["iteration"])
        if judge.kind == "objective":
            tasks += _objective_tasks(recs, sources.get(row_index), notes)
            continue
        target = targets.get(row_index)
        if target is None:
            continue
        first = recs[0]
        if first["iteration"] != 0 and sources.get(row_index):
            try:
                data = audio_io.read_bytes(sources[row_index])
            except OSError as exc:
                notes.append(f"row {row_index}: source audio not judged, it can not be read "
                             f"from field 'audio_uri' ({type(exc).__name__}: {exc})")  # fmt: skip
            else:
                sha = audio_io.sha256_bytes(data)
                tasks.append(_task(target, 0, data, sha, first["input_sha256"]))
        for rec in recs:
            if rec["status"] == "ok" and rec["audio_flac"]:
                tasks.append(
                    _task(
                        target,
                        rec["iteration"],
                        rec["audio_flac"],
                        rec["output_sha256"],
                        rec["record_sha256"],
                    )
                )
    return tasks


def _task(target: EvalTarget, iteration: int, audio: bytes, sha: str, judged: str) -> JudgeTask:
    return JudgeTask(
        clip_id=target.clip_id,
        row_index=target.row_index,
        round=iteration,
        task=target.task,
        label=target.label,
        audio=audio,
        audio_sha256=sha,
        judged_record_sha256=judged,
        language=target.language,
        text=target.text,
        target_text=target.target_text,
    )


def _objective_tasks(recs: list[dict], source_uri: str | None, notes: list[str]) -> list[JudgeTask]:
    tasks = []
    try:
        before = audio_io.read_bytes(source_uri) if source_uri else None
    except OSError as exc:
        notes.append(f"row {recs[0]['row_index']}: round 1 not judged, its source can not be "
                     f"read from field 'audio_uri' ({type(exc).__name__}: {exc})")  # fmt: skip
        before = None
    for rec in recs:
        if rec["status"] != "ok" or not rec["audio_flac"]:
            break
        for edit in parse_chain(rec["edit"]):
            if edit.type in OBJECTIVE_EDITS and before is not None:
                tasks.append(
                    JudgeTask(
                        clip_id=rec["clip_id"],
                        row_index=rec["row_index"],
                        round=rec["iteration"],
                        task=edit.type,
                        label=edit.option or edit.type,
                        audio=rec["audio_flac"],
                        audio_sha256=rec["output_sha256"],
                        judged_record_sha256=rec["record_sha256"],
                        edit=edit,
                        before=before,
                    )
                )
        before = rec["audio_flac"]
    return tasks
