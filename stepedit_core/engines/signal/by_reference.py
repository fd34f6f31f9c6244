"""Signal edits on round audio that travels by reference (an `AudioRef` in the run's store).

A `loudness` edit, the one a chapter needs, runs from the referenced object to a new one in
blocks (master_blocks / level_blocks): the samples are never all in memory, however long the
chapter. Its output is published content-addressed next to the round's other audio and comes
back as an `AudioRef`, with the speech spans mastering found (in the output's frames) so QC
need not run the detector again. Other edits read the referenced audio whole
(engine.streams says which edits stream).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stepedit_core.engines.signal.master_blocks import master_file
from stepedit_core.foundation.audio_ref import AudioRef, publish_file
from stepedit_core.quality.delivery import profile_for_loudness
from stepedit_core.signal.blocks import block_frames, ranges
from stepedit_core.signal.level_blocks import match_level_blocks, write_level_matched
from stepedit_core.signal.loudness import target_for

Spans = list[tuple[int, int]]


class RefReader:
    """An AudioRef read by frame range (the master's FrameSource)."""

    def __init__(self, ref: AudioRef) -> None:
        self.ref = ref
        self.frames, self.channels, self.sample_rate = ref.frames, ref.channels, ref.sample_rate

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.frames, stop)
        if stop <= start:
            return np.zeros((0, self.channels), dtype=np.float32)
        return self.ref.read(start, stop - start)


def loudness_by_reference(
    ref: AudioRef, option: str, directory: str, vad: Any = None
) -> tuple[AudioRef, Spans | None]:
    """`loudness=<option>` of the referenced audio, published to `directory`: the output's
    reference and, for a mastering profile, its speech spans."""
    source = RefReader(ref)
    profile = profile_for_loudness(option)
    with tempfile.TemporaryDirectory(prefix="stepedit-master-") as scratch:
        target = Path(scratch) / "out.flac"
        spans: Spans | None = None
        if profile is not None and profile.masters_room_tone:
            mastered = master_file(source, target, option, profile, vad)
            frames, sha256, spans = mastered.frames, mastered.sha256, mastered.spans
        else:
            size = block_frames(ref.sample_rate)

            def opened() -> Any:
                return ranges(source.read, ref.frames, size)

            leveled = match_level_blocks(opened, ref.sample_rate, ref.channels, option)
            _, _, ceiling = target_for(option)
            writer = write_level_matched(
                opened, target, ref.sample_rate, ref.channels, leveled, ceiling
            )
            frames, sha256 = writer.frames, writer.sha256
        uri = publish_file(str(target), directory, f"{sha256}.flac")
    return AudioRef(uri, sha256, ref.sample_rate, frames, ref.channels), spans
