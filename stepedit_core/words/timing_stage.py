"""The word-timing stage: the words of every round's output, into the round record (`words_json`).

It runs after the engine's stages in each round, when word timings are on (`--word-timings`,
and always with `--asr-models` or the `fillers` edit in the job). A round whose `fillers` edit
already timed its output (the edit's own alignment, moved past its cuts) is not timed again.

What the output should say is the row's `text` (or, after an edit that changes the words, the
`target_text` without its tags). Mode `auto` takes the first backend that can time the row
(`backends.word_timings`: forced alignment of that text, else the ASR); mode `asr` always uses
the ASR's own word times. A round whose words can not be found is not failed (its audio is
what it is): `words_json` stays empty and the reason is kept as a note in the round's QC.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stepedit_core.foundation.edits import EditSpec
from stepedit_core.foundation.stages import Resources, Stage, WorkItem
from stepedit_core.words.timing import OutputWords

WORD_TIMING_MODES = ("auto", "asr")
STAGE_NAME = "word_timing"


def word_timing_mode(
    asked: str | None, asr_models: str | None, edits: Iterable[EditSpec]
) -> str | None:
    """The stage's mode for a run, or None when the run records no word timings: what was
    asked, else `auto` when the run has an ASR model or the fillers edit."""
    if asked is not None:
        return asked
    if asr_models is not None or any(e.type == "fillers" for e in edits):
        return "auto"
    return None


class TimeWords(Stage):
    name = STAGE_NAME
    resources = Resources(cpus=1.0)
    batch_size = 8

    def __init__(self, mode: str = "auto", asr_models: str | None = None) -> None:
        if mode not in WORD_TIMING_MODES:
            raise ValueError(f"word timings {mode!r}: expected one of {WORD_TIMING_MODES}")
        if mode == "asr" and asr_models is None:
            raise ValueError("word timings 'asr' need an ASR model folder (--asr-models DIR)")
        self.mode = mode
        self.asr_models = asr_models

    def select(self, items: list[WorkItem]) -> list[WorkItem]:
        """Outputs of this round that nothing has timed yet."""
        return [
            i
            for i in items
            if not i.failed and i.round_edits and i.output is not None
            and i.words is None
        ]  # fmt: skip

    def process_item(self, item: WorkItem) -> None:
        assert item.output is not None
        try:
            timings = self.time(item)
        except Exception as exc:  # noqa: BLE001 - missing word timings never fail a round
            item.words = OutputWords(note=f"{getattr(exc, 'code', type(exc).__name__)}: {exc}")
            return
        # an ASR's transcript is kept: the WER gate compares it, with no second ASR pass
        item.words = OutputWords(list(timings.words), timings.backend, timings.transcript)

    def time(self, item: WorkItem) -> Any:
        """The output's WordTimings from the backend this mode and row call for."""
        from stepedit_core.words.backends import AsrWords, word_timings
        from stepedit_core.words.gate import expected_text

        output = item.samples("output")  # read here when the output is a reference
        assert output is not None
        samples, rate = output.samples, output.sample_rate
        text = expected_text(item)
        asr = self._asr()
        if self.mode == "asr":
            return AsrWords(asr, _vad()).times(samples, rate, text, item.language)
        return word_timings(samples, rate, text, item.language, asr, _vad() if asr else None)

    def _asr(self) -> Any:
        if self.asr_models is None:
            return None
        from stepedit_core.words.asr import shared_asr

        return shared_asr(self.asr_models)


def _vad() -> Any:
    """The process's silero-vad (ASR words are put onto its voiced stretches)."""
    from stepedit_core.signal.vad import shared_vad

    return shared_vad()
