"""Work items for tests, made the way a run makes them: a `ClipSpec` of the row's fields and
the round's facts on the item."""

from __future__ import annotations

from typing import Any

from stepedit_core.foundation.clip_spec import ClipSpec
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.foundation.stages import WorkItem

SPEC_FIELDS = ("text", "target_text", "segments", "language", "speaker", "seed")


def row_item(
    row_index: int, clip_id: str, audio_uri: str, edits: tuple[EditSpec, ...], **fields: Any
) -> WorkItem:
    """A `WorkItem` of a row (`SPEC_FIELDS` go to its spec, the rest onto the item)."""
    row = {k: fields.pop(k) for k in SPEC_FIELDS if k in fields}
    return WorkItem(ClipSpec(row_index, clip_id, audio_uri, tuple(edits), **row), **fields)
