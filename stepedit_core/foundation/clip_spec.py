"""What a manifest row says about one clip, fixed once the row is planned.

A `ClipSpec` is made once, where a run builds its work items from the shard plan, and never
changes afterwards: every stage of every round reads the same row. What changes from round to
round (the audio, the text the audio now says, the engine's trace, the failure) lives on the
`WorkItem` that carries the spec (stages.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from stepedit_core.foundation.edits import EditSpec


@dataclass(frozen=True)
class ClipSpec:
    row_index: int
    clip_id: str
    audio_uri: str
    edits: tuple[EditSpec, ...]
    text: str | None = None  # the manifest's transcript (a round's own text is on the item)
    target_text: str | None = None
    segments: str | None = None  # the manifest's `segments` cell: timed texts of a long clip
    language: str | None = None
    speaker: str | None = None
    seed: int = 0
