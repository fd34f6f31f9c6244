"""QC of every round, as a stage of its own: measure the round's output, then publish it.

QC loads models (silero-vad always; DNSMOS and the speaker encoder with the `qc-heavy`
metrics; an ASR model for the word-error gate), so it runs in an actor pool that declares what
it needs and loads them once in `setup()`, not inside whichever model actor ran before it.

The stage also publishes the round's output into the run's store (audio_ref.py) and replaces
it on the item with the reference: it is the last stage of a round that needs the samples, so
they are read once here and dropped, and what travels on to the round's end, the next round
and the shard writer is a reference of a few hundred bytes. An engine's `round_handoff` (the
next round's input made from the output) is applied here for the same reason.

A metric that fails to compute is a note in the record, never a failed clip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.audio_ref import AudioRef, publish
from stepedit_core.foundation.stages import Resources, RoundQc, Stage, WorkItem, guard, timed
from stepedit_core.quality.delivery import QcPlan, check
from stepedit_core.quality.qc_result import QcResult

# what a record keeps of every round's QC in columns of its own (qc.basic_metrics)
BASIC_KEYS = ("duration_s", "peak_dbfs", "rms_dbfs", "clipped_samples")


class MeasureRound(Stage):
    """Measures each round's output against its source and publishes it (see module doc)."""

    name = "qc"
    resources = Resources(cpus=1.0, memory_mb=1024)
    needs_actor = True
    batch_size = 8

    def __init__(
        self, qc_plan: QcPlan | None = None, handoff: Callable[[Audio], Audio] | None = None
    ) -> None:
        self.qc_plan = qc_plan or QcPlan()
        self.handoff = handoff

    def setup(self) -> None:
        """Load the models once per actor; they are the process's shared instances (never
        kept on the stage, which is pickled to every actor)."""
        from stepedit_core.quality import qc
        from stepedit_core.signal.vad import shared_vad

        shared_vad()
        if self.qc_plan.heavy:
            if qc.dnsmos_unavailable() is None:
                qc._dnsmos_model()
            if qc.similarity_unavailable() is None:
                qc._voice_encoder()
        if self.qc_plan.asr_models is not None:
            from stepedit_core.words.asr import shared_asr

            shared_asr(self.qc_plan.asr_models)

    def select(self, items: list[WorkItem]) -> list[WorkItem]:
        return [i for i in items if not i.failed and i.round_edits and i.output is not None]

    def process_item(self, item: WorkItem) -> None:
        if isinstance(item.output, AudioRef) and self._streams():
            self._measure_ref(item, item.output)
            return
        output = item.samples("output")
        assert output is not None  # select() keeps only items with an output
        from stepedit_core.quality.qc import basic_metrics

        item.round_qc = RoundQc(basic=basic_metrics(output), profile=self.qc_plan.profile)
        self._measure(item, output, item.round_qc)
        with timed(item, "publish"):
            self._publish(item, output)

    def _publish(self, item: WorkItem, output: Audio) -> None:
        """The output (and the next round's input, when the engine hands on another) as
        objects in the run's store; kept in memory when the item has no store (unit tests)."""
        handed = self.handoff(output) if self.handoff is not None else None
        if item.audio_dir is None:
            item.next_audio = handed
            return
        if not isinstance(item.output, AudioRef):
            item.output = publish(output, item.audio_dir)
        item.next_audio = publish(handed, item.audio_dir) if handed is not None else None

    def _measure(self, item: WorkItem, output: Audio, result: RoundQc) -> None:
        from stepedit_core.quality import qc  # silero-vad is loaded in setup()

        plan = self.qc_plan
        try:
            with timed(item, "qc"):
                if item.qc_reference is None and item.original is not None:
                    original = item.samples("original")
                    item.qc_reference = qc.reference(original, plan.heavy)
                report = qc.measure(output, item.qc_reference, heavy=plan.heavy)
        except Exception as exc:  # noqa: BLE001 - QC describes a round, it must not fail it
            result.qc_json = QcResult.failed(exc).to_json()
            if plan.gives_verdict:
                result.qc_pass, result.qc_reasons = False, f"QC could not measure: {exc}"
            return
        if plan.asr_models is not None:
            report = _with_wer(report, item, plan.asr_models)
        self._conclude(item, report, result)

    def _streams(self) -> bool:
        """Whether a referenced output is measured in blocks, never read whole: when nothing
        here needs its samples in memory (no handoff, no heavy metrics, no ASR)."""
        plan = self.qc_plan
        return self.handoff is None and not plan.heavy and plan.asr_models is None

    def _measure_ref(self, item: WorkItem, output: AudioRef) -> None:
        """QC of a published output (a chapter) in blocks, reusing the speech spans the
        engine found in it; the output is already in the store, so nothing is published."""
        from stepedit_core.quality import qc
        from stepedit_core.signal.vad import shared_vad

        plan = self.qc_plan
        result = RoundQc(basic={}, profile=plan.profile)
        item.round_qc = result
        try:
            with timed(item, "qc"):
                vad = shared_vad()
                if item.qc_reference is None and isinstance(item.original, AudioRef):
                    original = item.original
                    item.qc_reference = qc.reference_blocks(
                        original.blocks, original.sample_rate, original.channels, vad
                    )
                elif item.qc_reference is None and item.original is not None:
                    item.qc_reference = qc.reference(item.samples("original"), plan.heavy)
                report = qc.measure_ref(output, item.qc_reference, vad, item.output_speech)
        except Exception as exc:  # noqa: BLE001 - QC describes a round, it must not fail it
            result.basic = {"duration_s": round(output.duration, 4)}
            result.qc_json = QcResult.failed(exc).to_json()
            if plan.gives_verdict:
                result.qc_pass, result.qc_reasons = False, f"QC could not measure: {exc}"
            return
        result.basic = {k: report.metrics.get(k) for k in BASIC_KEYS}
        self._conclude(item, report, result)

    def _conclude(self, item: WorkItem, report: Any, result: RoundQc) -> None:
        """The report with the word-timing stage's note, and the profile's verdict."""
        plan = self.qc_plan
        words = item.words
        if words is not None and words.note:  # the word-timing stage could not time the output
            report = type(report)(report.metrics, {**report.notes, "words": words.note})
        result.qc_json = report.to_json()
        if plan.gives_verdict:
            verdict = check(report.metrics, plan.profile, plan.max_wer)
            result.qc_pass = verdict.passed
            result.qc_reasons = "; ".join(verdict.reasons) or None

    def process_live(self, items: list[WorkItem]) -> None:
        for item in items:
            guard(item, self.process_item)


def _with_wer(report: Any, item: WorkItem, asr_models: str) -> Any:
    """The report with the round's word error rate (`wer`) against its text."""
    from stepedit_core.words.asr import shared_asr
    from stepedit_core.words.gate import measure_wer

    try:
        wer, note = measure_wer(item, shared_asr(asr_models))
    except Exception as exc:  # noqa: BLE001 - an unmeasured WER is a note, as for every metric
        wer, note = None, f"ASR failed: {type(exc).__name__}: {exc}"
    notes = {**report.notes, "wer": note} if note else dict(report.notes)
    return type(report)({**report.metrics, "wer": wer}, notes)
