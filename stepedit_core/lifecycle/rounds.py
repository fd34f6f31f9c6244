"""How rounds are laid out: load the clip, then (round start, engine stages, round end) per round.

Every executor runs the same flat list of stages that `build_stages` returns. `StartRound` writes
the round's facts on each item (its number, the edits it gets in this round, its voice prompt);
engine stages read those facts and never look at this module. `MeasureRound` (round_qc.py) runs
QC on the round's output and publishes it into the run's store; `RoundEnd` turns the round into
a `RoundRecord` that references that object and hands the output on as the next round's input.
Rows whose edit chain starts with `clone` get a round 0 (zero-shot TTS from the prompt clip), and
their other edits run in rounds 1..N.

What a clip carries between rounds is small and does not grow with them: its audio is a
reference to an object in the run's store (audio_ref.py), and its round records do not ride on
it. `RoundEnd` hands each sealed record (metadata only: hashes, the audio's reference, tokens,
QC JSON) to the run's round channel as the round ends (round_handoff.py: in this process for
the local executor, a small named actor for Ray), and the item keeps only `WorkItem.sealed`:
how many rounds it sealed and the last two's hashes and audio references, which the next
round's record links to and a judge reads. The shard writer takes a finished clip's records
from the channel, checked against what the item sealed, and commits them with the row result in
one part, so a crash never leaves some rounds of a clip committed without the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stepedit_core.catalog.records import RoundRecord
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.audio_ref import (
    BY_REFERENCE_OVER_S,
    AudioRef,
    header_seconds,
    reference_source,
)
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.foundation.sources import InputLimits
from stepedit_core.foundation.stages import (
    Resources,
    SealedRound,
    Stage,
    WorkItem,
    guard,
    timed,
)
from stepedit_core.judges.stage import JudgeRound, RoundJudging
from stepedit_core.lifecycle.round_handoff import Handed, RoundRecordSink, RoundRecordStore
from stepedit_core.quality.delivery import QcPlan
from stepedit_core.quality.round_qc import MeasureRound

if TYPE_CHECKING:
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
    oversized or non-audio file fails that row only. A long source (over
    `BY_REFERENCE_OVER_S`) of an item that has a store is not read whole: it is hashed in
    chunks and passed on by reference, and the stages that need its samples read them."""

    name = "load"
    resources = Resources(cpus=0.25)
    needs_actor = False
    batch_size = 32

    def __init__(self, limits: InputLimits | None = None) -> None:
        self.limits = limits or InputLimits()

    def process_item(self, item: WorkItem) -> None:
        seconds = header_seconds(item.audio_uri) if item.audio_dir is not None else None
        if seconds is not None and seconds > BY_REFERENCE_OVER_S:
            source: Audio | AudioRef = reference_source(item.audio_uri, self.limits)
            item.source_sha256 = source.sha256
        else:
            source, data = audio_io.load(item.audio_uri, self.limits)
            item.source_sha256 = audio_io.sha256_bytes(data)
        item.audio = source
        item.original = source
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
    """Seals the round: its record (the output's reference and hash, tokens, the QC stage's
    measurement) is linked into the clip's hash chain, and the output (or the engine's hand-on,
    made by the QC stage) becomes the next round's input. No samples are touched here: by now
    the output is a reference to its object in the run's store (round_qc.py).

    The batch's records go to `records`, the run's round channel, before the items move on
    (round_handoff.py); the item keeps only what it sealed (`WorkItem.sealed`). Without a
    channel the stage keeps its own in-process one (a stage run outside a shard)."""

    resources = Resources(cpus=0.25)
    needs_actor = False
    ends_round = True
    batch_size = 32

    def __init__(
        self,
        round_number: int,
        engine_name: str,
        engine_version: str,
        records: RoundRecordSink | None = None,
    ) -> None:
        self.round = round_number
        self.engine_name = engine_name
        self.engine_version = engine_version
        self.records = records if records is not None else RoundRecordStore()
        self.name = f"round_end_{round_number}"

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        handed: list[Handed] = []
        for item in items:
            if not item.round_edits or item.audio is None:
                continue  # nothing ran for this item in this round (or it never loaded)
            last = item.sealed.last
            if last is not None and not last.ok:
                continue  # a failure was recorded in an earlier round: nothing ran since
            with timed(item, "record"):
                record = guard(item, RoundRecord.of, self.engine_name, self.engine_version)
            if record is None:  # encoding the output failed: record that failure instead
                record = RoundRecord.of(item, self.engine_name, self.engine_version)
            elif record.ok and item.round_qc is not None:
                measured = item.round_qc
                record.qc_profile, record.qc_json = measured.profile, measured.qc_json
                record.qc_pass, record.qc_reasons = measured.qc_pass, measured.qc_reasons
            # the hash chain: a clip's first record links to its source file's sha256
            record.seal((last.record_sha256 if last is not None else item.source_sha256) or "")
            handed.append((item.attempt, record))
            item.sealed.add(
                SealedRound(
                    record.round,
                    record.ok,
                    str(record.record_sha256),
                    record.output_sha256,
                    record.audio_ref,
                    record.audio_flac,
                )
            )
            # the round's facts end with it; an engine may hand some on (a chapter's segments)
            item.input_sha256 = record.output_sha256
            item.words = None
            item.trace = item.trace.next_round() if item.trace is not None else None
            item.timings = {}
            handed_on = item.next_audio if item.next_audio is not None else item.output
            item.output = item.next_audio = item.round_qc = item.output_speech = None
            if not item.failed:
                if self.round == CLONE_ROUND:
                    # the clone's voice is the clip's from now on: a fixed voice prompt
                    # (prompt mode `fixed`) is the round-0 audio, as in the paper's ablation
                    item.original = handed_on
                item.audio = handed_on
        if handed:  # held by the channel before the items move on: the writer may take them
            self.records.put(handed)
        return items


def build_stages(
    engine: Engine,
    rounds: int,
    with_clone_round: bool,
    prompt_mode: str = "chain",
    qc_plan: QcPlan | None = None,
    judging: RoundJudging | None = None,
    limits: InputLimits | None = None,
    records: RoundRecordSink | None = None,
) -> list[Stage]:
    """The flat stage list an executor runs: load, then (start, engine stages, end) per round,
    and with `judging` a judge after each round's end. Every round's end hands its records to
    `records` (the run's round channel; without one, a new in-process one)."""
    records = records if records is not None else RoundRecordStore()
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
        stages.append(MeasureRound(qc_plan, engine.round_handoff))
        stages.append(RoundEnd(k, engine.name, engine.version, records))
        if judging is not None:
            stages.append(JudgeRound(k, judging))
    return stages


def model_stage_names(engine: Engine) -> list[str]:
    """The stages of a run that load models and run in actor pools (each may get an environment
    of its own: --stage-python/--stage-image), in order: the run's own (transcribe, word timing)
    as well as the engine's."""
    stages = build_stages(engine, rounds=1, with_clone_round=False)
    return list(dict.fromkeys(stage.name for stage in stages if stage.needs_actor))
