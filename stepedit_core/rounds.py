"""How rounds are laid out: load the clip, then (round start, engine stages, round end) per round.

Every executor runs the same flat list of stages that `build_stages` returns. `StartRound` writes
the round's facts on each item (its number, the edits it gets in this round, its voice prompt);
engine stages read those facts and never look at this module. `RoundEnd` turns the round's output
into a `RoundRecord` and hands the output on as the next round's input. Rows whose edit chain
starts with `clone` get a round 0 (zero-shot TTS from the prompt clip), and their other edits run
in rounds 1..N.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stepedit_core import audio as audio_io
from stepedit_core.audio import Audio
from stepedit_core.delivery import QcPlan, check
from stepedit_core.edits import EditSpec
from stepedit_core.judges.stage import JudgeRound, RoundJudging
from stepedit_core.records import RoundRecord
from stepedit_core.sources import InputLimits
from stepedit_core.stages import Resources, Stage, WorkItem, guard, timed

if TYPE_CHECKING:
    from stepedit_core import qc as qc_module
    from stepedit_core.engines.base import Engine

CLONE_ROUND = 0


def edits_in_round(edits: tuple[EditSpec, ...], round_number: int) -> tuple[EditSpec, ...]:
    """The edits a row gets in a round: `clone` alone in round 0, the rest in rounds >= 1."""
    if round_number == CLONE_ROUND:
        return tuple(e for e in edits if e.type == "clone")
    return tuple(e for e in edits if e.type != "clone")


def has_clone(edits: tuple[EditSpec, ...]) -> bool:
    return any(e.type == "clone" for e in edits)


class LoadAudio(Stage):
    """Reads each clip from its URI, within the input limits (sources.py); a missing, empty,
    oversized or non-audio file fails that row only."""

    name = "load"
    resources = Resources(cpus=0.25)
    needs_actor = False
    batch_size = 32

    def __init__(self, limits: InputLimits | None = None) -> None:
        self.limits = limits or InputLimits()

    def process_item(self, item: WorkItem) -> None:
        audio, data = audio_io.load(item.audio_uri, self.limits)
        item.source_sha256 = audio_io.sha256_bytes(data)
        item.audio = audio
        item.original = audio
        item.input_sha256 = item.source_sha256


class StartRound(Stage):
    """Writes the round's facts on every item: number, edits, voice prompt (chain: this round's
    input; fixed: the source clip)."""

    resources = Resources(cpus=0.25)
    needs_actor = False
    batch_size = 64

    def __init__(self, round_number: int, prompt_mode: str) -> None:
        self.round = round_number
        self.prompt_mode = prompt_mode
        self.name = f"start_round_{round_number}"

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        for item in items:
            item.round = self.round
            # a clip a judge already confirmed gets no further rounds (--until-judged)
            item.round_edits = () if item.stopped_by else edits_in_round(item.edits, self.round)
            if not item.failed:
                item.prompt = item.original if self.prompt_mode == "fixed" else item.audio
        return items


class RoundEnd(Stage):
    """Records the round (FLAC bytes, hashes, tokens, QC metrics and verdict), seals the record
    into the clip's hash chain, and promotes the output to the next round's input, through the
    engine's `round_handoff` when it has one (the record keeps the output as it was made)."""

    resources = Resources(cpus=0.25)
    needs_actor = False
    ends_round = True
    batch_size = 32

    def __init__(
        self,
        round_number: int,
        engine_name: str,
        engine_version: str,
        qc_plan: QcPlan | None = None,
        handoff: Callable[[Audio], Audio] | None = None,
    ) -> None:
        self.round = round_number
        self.engine_name = engine_name
        self.engine_version = engine_version
        self.qc_plan = qc_plan or QcPlan()
        self.handoff = handoff
        self.name = f"round_end_{round_number}"

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        for item in items:
            if not item.round_edits or item.audio is None:
                continue  # nothing ran for this item in this round (or it never loaded)
            if item.records and not item.records[-1].ok:
                continue  # a failure was recorded in an earlier round: nothing ran since
            with timed(item, "record"):
                record = guard(item, RoundRecord.of, self.engine_name, self.engine_version)
            if record is None:  # encoding the output failed: record that failure instead
                record = RoundRecord.of(item, self.engine_name, self.engine_version)
            elif record.ok:
                with timed(item, "qc"):
                    self._measure(item, record)
            # the hash chain: a clip's first record links to its source file's sha256
            record.seal(
                (item.records[-1].record_sha256 if item.records else item.source_sha256) or ""
            )
            item.records.append(record)
            # the round's facts end with it; an engine may hand some on (a chapter's segments)
            item.input_sha256 = record.output_sha256
            item.words = None
            item.trace = item.trace.next_round() if item.trace is not None else None
            item.timings = {}
            if not item.failed:
                output = item.output
                if self.handoff is not None and output is not None:
                    output = self.handoff(output)
                if self.round == CLONE_ROUND:
                    # the clone's voice is the clip's from now on: a fixed voice prompt
                    # (prompt mode `fixed`) is the round-0 audio, as in the paper's ablation
                    item.original = output
                item.audio, item.output = output, None
        return items

    def _measure(self, item: WorkItem, record: RoundRecord) -> None:
        """QC of the round's output against its source; a metric that fails to compute is a
        note in the record, never a failed clip."""
        from stepedit_core import qc  # loads silero-vad on first use, in the worker

        plan = self.qc_plan
        record.qc_profile = plan.profile
        try:
            if item.qc_reference is None and item.original is not None:
                item.qc_reference = qc.reference(item.original, plan.heavy)
            report = qc.measure(item.output, item.qc_reference, heavy=plan.heavy)
        except Exception as exc:  # noqa: BLE001 - QC describes a round, it must not fail it
            record.qc_json = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
            if plan.gives_verdict:
                record.qc_pass, record.qc_reasons = False, f"QC could not measure: {exc}"
            return
        if plan.asr_models is not None:
            report = _with_wer(report, item, plan.asr_models)
        words = item.words
        if words is not None and words.note:  # the word-timing stage could not time the output
            report = type(report)(report.metrics, {**report.notes, "words": words.note})
        record.qc_json = report.to_json()
        if plan.gives_verdict:
            verdict = check(report.metrics, plan.profile, plan.max_wer)
            record.qc_pass = verdict.passed
            record.qc_reasons = "; ".join(verdict.reasons) or None


def _with_wer(report: qc_module.QcReport, item: WorkItem, asr_models: str) -> Any:
    """The report with the round's word error rate (`wer`) against its text."""
    from stepedit_core.words.asr import shared_asr
    from stepedit_core.words.gate import measure_wer

    try:
        wer, note = measure_wer(item, shared_asr(asr_models))
    except Exception as exc:  # noqa: BLE001 - an unmeasured WER is a note, as for every metric
        wer, note = None, f"ASR failed: {type(exc).__name__}: {exc}"
    notes = {**report.notes, "wer": note} if note else dict(report.notes)
    return type(report)({**report.metrics, "wer": wer}, notes)


def build_stages(
    engine: Engine,
    rounds: int,
    with_clone_round: bool,
    prompt_mode: str = "chain",
    qc_plan: QcPlan | None = None,
    judging: RoundJudging | None = None,
    limits: InputLimits | None = None,
) -> list[Stage]:
    """The flat stage list an executor runs: load, then (start, engine stages, end) per round,
    and with `judging` a judge after each round's end."""
    stages: list[Stage] = [LoadAudio(limits)]
    if engine.options.asr_models is not None:  # rows without `text` get the ASR's transcript
        from stepedit_core.words.stage import TranscribeMissingText

        stages.append(TranscribeMissingText(engine.options.asr_models))
    first = CLONE_ROUND if with_clone_round else 1
    for k in range(first, rounds + 1):
        stages.append(StartRound(k, prompt_mode))
        stages.extend(engine.stages())
        if engine.options.word_timings is not None:  # the words of every round's output
            from stepedit_core.words.timing_stage import TimeWords

            stages.append(TimeWords(engine.options.word_timings, engine.options.asr_models))
        stages.append(RoundEnd(k, engine.name, engine.version, qc_plan, engine.round_handoff))
        if judging is not None:
            stages.append(JudgeRound(k, judging))
    return stages


def model_stage_names(engine: Engine) -> list[str]:
    """The stages of a run that load models and run in actor pools (each may get an environment
    of its own: --stage-python/--stage-image), in order: the run's own (transcribe, word timing)
    as well as the engine's."""
    stages = build_stages(engine, rounds=1, with_clone_round=False)
    return list(dict.fromkeys(stage.name for stage in stages if stage.needs_actor))
