"""The demo catalog: a manifest over the clips the package ships, with an edit per clip."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.demo import demo_clips

# Per-clip edits that suit what each shipped clip is (see stepedit_core/demo/clips.json).
NOISY_EDIT = "denoise;loudness=-23"
PAUSED_EDIT = "vad;loudness=acx"
CLEAN_EDIT = "speed=faster;loudness=-23"


def demo_edit(note: str) -> str:
    lowered = note.lower()
    if "nois" in lowered:
        return NOISY_EDIT
    if "pause" in lowered:
        return PAUSED_EDIT
    return CLEAN_EDIT


def write_demo_manifest(folder: Path, with_edits: bool = True) -> Path:
    """Write `catalog.parquet` into `folder` and return its path."""
    clips = demo_clips()
    columns = {
        "clip_id": [c["clip_id"] for c in clips],
        "audio_uri": [str(c["path"]) for c in clips],
        "text": [c["text"] for c in clips],
        "language": [c.get("language") for c in clips],
        "speaker": [c.get("speaker") for c in clips],
        "note": [c.get("note", "") for c in clips],  # passes through to the output manifest
    }
    if with_edits:
        columns["edit"] = [demo_edit(c.get("note", "")) for c in clips]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "catalog.parquet"
    pq.write_table(pa.table(columns), path)
    return path
