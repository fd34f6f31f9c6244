"""Judges as stages of the Ray pipeline: a CPU actor of HTTP clients with a concurrency limit.

- `JudgeTasks` judges standalone `JudgeTask`s (`stepedit judge` on a finished run).
- `JudgeRound` follows a round's end in an editing run (`stepedit run --judge`): it judges the
  round each clip just finished, keeps the verdict on the item (committed with the round's part)
  and, with `until_judged`, stops a clip whose round the judge confirmed.

Each stage runs in one actor (`max_actors = 1`) that keeps `concurrency` requests in flight, so
`--concurrency` is the limit for the whole run, however many CPUs the cluster has.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from stepedit_core.catalog.records import round_flac
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.audio_ref import AudioRef, read_object
from stepedit_core.foundation.stages import Resources, SealedRound, Stage, WorkItem
from stepedit_core.judges.judge import Judge, JudgeTask
from stepedit_core.judges.objective import OBJECTIVE_EDITS
from stepedit_core.judges.targets import EvalTarget

JUDGE_CPUS = 0.2  # waiting on HTTP, not computing (objective judges measure a little)


def _batch_size(judge: Judge) -> int:
    return max(32, 4 * judge.concurrency)  # several waves per call: the gaps between calls amortise


class JudgeTasks(Stage):
    name = "judge"
    resources = Resources(cpus=JUDGE_CPUS)
    max_actors = 1

    def __init__(self, judge: Judge) -> None:
        self.judge = judge
        self.batch_size = _batch_size(judge)

    def process_batch(self, items: list[Any]) -> list[Any]:
        verdicts = self.judge.judge_many(items)
        for task, verdict in zip(items, verdicts, strict=True):
            task.verdict = verdict
            task.audio, task.before = b"", None  # the audio need not travel back
        return items


@dataclass
class RoundJudging:
    """How an editing run judges its rounds."""

    judge: Judge
    targets: dict[int, EvalTarget] = field(default_factory=dict)  # row index -> target
    until_judged: bool = False


class JudgeRound(Stage):
    resources = Resources(cpus=JUDGE_CPUS)
    max_actors = 1

    def __init__(self, round_number: int, judging: RoundJudging) -> None:
        self.round = round_number
        self.judging = judging
        self.name = f"judge_round_{round_number}"
        self.batch_size = _batch_size(judging.judge)

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        owners: list[WorkItem] = []
        tasks: list[JudgeTask] = []
        for item in items:
            for task in self._tasks(item):
                owners.append(item)
                tasks.append(task)
        for item, verdict in zip(owners, self.judging.judge.judge_many(tasks), strict=True):
            item.verdicts.append(verdict)
        if self.judging.until_judged:
            for item in items:
                self._maybe_stop(item)
        return items

    def _tasks(self, item: WorkItem) -> list[JudgeTask]:
        """The judge tasks for the round this item just finished (none if it did not run)."""
        record = item.sealed.last  # the record itself went to the run's round channel
        if record is None or record.round != self.round or item.stopped_by:
            return []
        run_uri = posixpath.dirname(item.audio_dir or "")  # where run-relative refs resolve
        audio = _flac(record, run_uri) if record.ok else None
        if not audio:
            return []
        base = {
            "clip_id": item.clip_id,
            "row_index": item.row_index,
            "round": self.round,
            "audio": audio,
            "audio_sha256": str(record.output_sha256),
            "judged_record_sha256": str(record.record_sha256),
            "language": item.language,
        }
        if self.judging.judge.kind == "objective":
            earlier = item.sealed.before
            before = _flac(earlier, run_uri) if earlier is not None else None
            if before is None and isinstance(item.original, AudioRef):
                before = read_object(item.original.uri)  # a file's bytes: any format decodes
            elif before is None and item.original is not None:
                before = audio_io.encode_flac(item.original)
            return [
                JudgeTask(**base, task=e.type, label=e.option or e.type, edit=e, before=before)
                for e in item.round_edits
                if e.type in OBJECTIVE_EDITS
            ]
        target = self.judging.targets.get(item.row_index)
        if target is None:
            return []
        return [
            JudgeTask(
                **base,
                task=target.task,
                label=target.label,
                text=target.text,
                target_text=target.target_text,
            )
        ]

    def _maybe_stop(self, item: WorkItem) -> None:
        mine = [v for v in item.verdicts if v.round == self.round]
        if mine and all(v.landed for v in mine):
            labels = ", ".join(f"{v.task}={v.answer}" for v in mine)
            reason = (
                f"stopped after iteration {self.round}: the {self.judging.judge.kind} judge "
                f"confirmed {labels}"
            )
            item.stopped_by = reason
            # the reason goes on the verdict that decided it, re-sealed (its chain link holds)
            for verdict in mine:
                verdict.stop_reason = reason
                verdict.seal(str(verdict.prev_record_sha256))


def _flac(sealed: SealedRound, run_uri: str) -> bytes | None:
    """A sealed round's FLAC bytes, read from the object its record references."""
    return round_flac({"audio_flac": sealed.audio_flac, "audio_ref": sealed.audio_ref}, run_uri)
