"""What the model engine's stages hand each other in a round, and what its round records keep.

The tokenize stage writes the round input's codes and the decoder's voice prompt; the edit stage
the generated codes, one entry per LLM pass, the exact instruction text and the model folder's
fingerprint; the decode stage reads codes and voice prompt. A clip longer than one segment
(segmented.py) also carries its segment sub-items in the round, each sub-item its place in the
chapter, and the chapter, once stitched, the list of its edited segments: the next round cuts
its input where this round's segments ended.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from stepedit_core.engines.stepaudio.roundtrip import PassEntry
from stepedit_core.engines.stepaudio.tokenizer import Encoded
from stepedit_core.foundation.traces import EngineTrace, RecordColumn

if TYPE_CHECKING:
    from stepedit_core.foundation.stages import WorkItem


@dataclass(frozen=True)
class SegmentPlace:
    """Where one segment sits: in the round's input and in the source (seconds), and the sha256
    of its input samples."""

    index: int
    start_s: float
    end_s: float
    source_start_s: float
    source_end_s: float
    input_sha256: str


@dataclass(frozen=True)
class EditedSegment:
    """One segment of an edited chapter as its round record lists it (`segments_json`)."""

    place: SegmentPlace
    output_start_s: float
    output_end_s: float
    output_sha256: str
    text: str | None
    key: str

    def entry(self) -> dict[str, Any]:
        return {**asdict(self.place), **{k: v for k, v in asdict(self).items() if k != "place"}}


def _codes(codes: list[int] | None) -> list[int] | None:
    return None if codes is None else [int(c) for c in codes]


def _input_tokens(trace: StepAudioTrace) -> list[int] | None:
    return _codes(trace.input_tokens)


def _output_tokens(trace: StepAudioTrace) -> list[int] | None:
    return _codes(trace.output_tokens)


def _instruction(trace: StepAudioTrace) -> str | None:
    return trace.instruction


def _model_fingerprint(trace: StepAudioTrace) -> str | None:
    return trace.model_fingerprint


def _passes_json(trace: StepAudioTrace) -> str | None:
    if trace.passes is None:
        return None
    return json.dumps([entry.to_json() for entry in trace.passes], sort_keys=True)


def _segments_json(trace: StepAudioTrace) -> str | None:
    if not trace.edited_segments:
        return None
    return json.dumps([segment.entry() for segment in trace.edited_segments])


@dataclass
class StepAudioTrace(EngineTrace):
    input_tokens: list[int] | None = None  # codes (0..5119) of the round's input clip
    output_tokens: list[int] | None = None  # codes the LLM generated (its last pass)
    # the decoder's voice prompt (codes, mel features, speaker embedding): this round's input in
    # chain mode, the source clip in fixed mode
    voice: Encoded | None = None
    clone_speaker: str | None = None  # speaker name of a clone prompt
    passes: list[PassEntry] | None = None  # one entry per LLM pass of the round
    instruction: str | None = None  # the exact instruction text of every pass, joined
    model_fingerprint: str | None = None  # the model folder's fingerprint
    segment_items: list[WorkItem] | None = None  # a chapter's segments in this round
    segment: SegmentPlace | None = None  # a segment's place in its chapter
    edited_segments: list[EditedSegment] | None = None  # a stitched chapter's segments
    previous_segments: list[EditedSegment] | None = None  # the previous round's segments

    COLUMNS = (
        RecordColumn("input_tokens", pa.list_(pa.int32()), _input_tokens, after="timings_json"),
        RecordColumn("output_tokens", pa.list_(pa.int32()), _output_tokens, after="input_tokens"),
        RecordColumn("instruction", pa.string(), _instruction, after="qc_json"),
        RecordColumn("model_fingerprint", pa.string(), _model_fingerprint, after="instruction"),
        # JSON list, one object per LLM pass of the round (roundtrip.py)
        RecordColumn("passes_json", pa.string(), _passes_json, after="model_fingerprint"),
        # a clip edited in segments: [{"index", "start_s", "end_s", "source_start_s",
        # "source_end_s", "input_sha256", "output_start_s", "output_end_s", "output_sha256",
        # "text", "key"}] (segmented.py)
        RecordColumn("segments_json", pa.string(), _segments_json, after="text_source"),
    )

    def next_round(self) -> StepAudioTrace | None:
        """A chapter's next round cuts its input where this round's segments ended."""
        if not self.edited_segments:
            return None
        return StepAudioTrace(previous_segments=self.edited_segments)


def segment_items(item: WorkItem) -> list[WorkItem] | None:
    """The item's segment sub-items in this round (None: not a chapter, or not split yet)."""
    trace = item.trace
    return trace.segment_items if isinstance(trace, StepAudioTrace) else None
