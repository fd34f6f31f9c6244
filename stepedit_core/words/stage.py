"""Transcripts for rows without `text`: the ASR model fills it in before the first round, so
edits that quote the transcript (the model engine's) can run on a catalog of bare audio."""

from __future__ import annotations

from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.stages import Resources, Stage, WorkItem


class TranscribeMissingText(Stage):
    """Runs once per clip, on its source audio; rows with a `text` keep theirs."""

    name = "transcribe"
    resources = Resources(cpus=1.0)
    batch_size = 8

    def __init__(self, asr_models: str) -> None:
        self.asr_models = asr_models

    def select(self, items: list[WorkItem]) -> list[WorkItem]:
        return [i for i in items if not i.failed and i.audio is not None]

    def process_item(self, item: WorkItem) -> None:
        if (item.text or "").strip():
            item.text_source = "manifest"
            return
        from stepedit_core.words.asr import shared_asr

        audio = item.samples("audio")  # read here when the source is a reference
        assert audio is not None
        transcript = shared_asr(self.asr_models).transcribe(
            audio.samples, audio.sample_rate, item.language
        )
        if not transcript.text:
            raise ItemFailure(
                "asr_failed", "column 'text' is empty and the ASR model heard no words in the clip"
            )
        item.text, item.text_source = transcript.text, "asr"
