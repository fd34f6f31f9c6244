"""ACX mastering (mastering.py) from file to file in blocks, for chapters of any length.

The same decisions as in memory, taken from statistics gathered a block at a time:

1. Speech: silero-vad over the file (signal.vad.SpeechFinder), once.
2. Head and tail: `edge_plan`; room-tone spectrum from the pauses (one read per pause).
3. Leveler: `LevelStats` over the body, `plan_leveling`, applied by position.
4. The level match's gain on the levelled body (level_blocks: one pass per trial), the pause
   gate (`plan_gate`: one read per pause) and, for near-silent pauses, a bed in tiles.
5. The joined signal (head tone, body, tail tone; `plan_join`) level-matched and written; its
   noise floor measured on the way and, if still over the limit, the pauses gated once more.

Every stage is a function of (start, stop) frames, so a pass reads the file a block at a time and
memory holds one block (plus the limiter's overlap), the speech spans and the leveler's curve
(one number per ms). The output equals the in-memory master up to float rounding and soxr's
streamed resampling (tested to 1e-4 on clips with blocks much smaller than the clip).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stepedit_core.engines.signal.leveler import LevelPlan, LevelStats, plan_leveling
from stepedit_core.engines.signal.mastering import BED_MARGIN_DB, Gate, floor_target_db, plan_gate
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.quality.delivery import Profile
from stepedit_core.quality.edges import edge_plan
from stepedit_core.signal.blocks import FileReader, block_frames, ranges
from stepedit_core.signal.level_blocks import match_level_blocks, write_level_matched
from stepedit_core.signal.loudness import target_for
from stepedit_core.signal.meters import NoiseFloorMeter
from stepedit_core.signal.room_tone import (
    BedTone,
    Read,
    pause_level_of,
    plan_join,
    room_tone_power,
    synth_room_tone,
)
from stepedit_core.signal.vad import SPEECH_MIN_SILENCE_S, shared_vad


@dataclass(frozen=True)
class MasteredFile:
    path: Path
    frames: int
    sample_rate: int
    channels: int
    sha256: str
    spans: list[tuple[int, int]]  # speech in the output's frames: QC need not look again
    gain_db: float


class FrameSource(Protocol):
    """What the blockwise master reads: a FileReader, or any object that reads frame ranges."""

    frames: int
    channels: int
    sample_rate: int

    def read(self, start: int, stop: int) -> np.ndarray: ...


def master_file(
    source: str | Path | FrameSource,
    target: str | Path,
    option: str,
    profile: Profile,
    vad: Any = None,
    block: int | None = None,
    subtype: str = "PCM_24",
) -> MasteredFile:
    """`loudness=<option>` mastered into `profile` from `source` to `target` (FLAC; WAV for
    subtype FLOAT). As in memory, a clip whose head and tail of room tone would take the level
    out of reach keeps its own edges."""
    if not isinstance(source, str | Path):
        return _master_source(source, target, option, profile, vad, block, subtype)
    with FileReader(source) as reader:
        return _master_source(reader, target, option, profile, vad, block, subtype)


def _master_source(
    reader: FrameSource,
    target: str | Path,
    option: str,
    profile: Profile,
    vad: Any,
    block: int | None,
    subtype: str,
) -> MasteredFile:
    spans = _speech(reader, vad, block)
    try:
        return _master(reader, target, option, profile, spans, block, subtype, edges=True)
    except ItemFailure as failure:
        if failure.code != "loudness_unreachable":
            raise
        return _master(reader, target, option, profile, spans, block, subtype, edges=False)


def _speech(reader: FrameSource, vad: Any, block: int | None) -> list[tuple[int, int]]:
    finder = (vad or shared_vad()).finder(reader.sample_rate, reader.channels, SPEECH_MIN_SILENCE_S)
    for part in ranges(reader.read, reader.frames, block or block_frames(reader.sample_rate)):
        finder.feed(part)
    return finder.finish()


def _master(
    reader: FrameSource,
    target: str | Path,
    option: str,
    profile: Profile,
    spans: list[tuple[int, int]],
    block: int | None,
    subtype: str,
    edges: bool,
) -> MasteredFile:
    rate, channels = reader.sample_rate, reader.channels
    size = block or block_frames(rate)
    window = profile.rms_range_db
    mode, target_db, ceiling = target_for(option)
    if not spans:  # nothing to protect or to place room tone around: the level only
        return _write(
            reader.read,
            reader.frames,
            rate,
            channels,
            target,
            option,
            None,
            window,
            ceiling,
            size,
            subtype,
            spans,
            None,
            None,
        )
    tone_power = room_tone_power(_Sliced(reader), rate, spans)  # type: ignore[arg-type]
    head_cut = tail_cut = head_pad = tail_pad = 0
    if edges:
        head_cut, tail_cut, head_pad, tail_pad = edge_plan(reader.frames, rate, spans, profile)
        spans = [(a - head_cut, b - head_cut) for a, b in spans]
    body_frames = reader.frames - head_cut - tail_cut

    def raw(start: int, stop: int) -> np.ndarray:
        return reader.read(head_cut + start, head_cut + stop)

    plan: LevelPlan | None = None
    if window is not None and mode == "rms":
        stats = LevelStats(rate)
        for part in ranges(raw, body_frames, size):
            stats.feed(part)
        plan = plan_leveling(stats, rate, channels, spans, target_db, window, ceiling)
    aim = plan.aim_db if plan else None

    def leveled(start: int, stop: int) -> np.ndarray:
        part = raw(start, stop)
        return plan.apply(part, start) if plan else part

    # the gain the final level match will apply (pads are room tone: their energy is negligible)
    probe = _padded(leveled, body_frames, head_pad, tail_pad, channels)
    gain_db = match_level_blocks(
        lambda: ranges(probe, head_pad + body_frames + tail_pad, size),
        rate,
        channels,
        option,
        aim,
        window,
    ).gain_db
    floor_target = floor_target_db(profile)
    gate: Gate | None = None
    bed: BedTone | None = None
    if floor_target is not None:
        gate = plan_gate(leveled, body_frames, rate, spans, floor_target - gain_db)

        def gated(start: int, stop: int) -> np.ndarray:
            return gate.apply(leveled(start, stop), start)  # type: ignore[union-attr]

        quiet = pause_level_of(gated, body_frames, rate, spans)
        warn = profile.noise_floor_warn_below_db
        if warn is not None and quiet is not None and quiet + gain_db < warn + BED_MARGIN_DB:
            bed = BedTone(body_frames, rate, tone_power, floor_target - gain_db, channels)

    def body(start: int, stop: int) -> np.ndarray:
        part = leveled(start, stop)
        if gate is not None:
            part = gate.apply(part, start)
        if bed is not None:
            part = part + bed.range(start, stop)
        return part

    tone_level = (floor_target if floor_target is not None else -60.0) - gain_db
    head = synth_room_tone(head_pad, rate, tone_power, tone_level, 2, channels)
    tail = synth_room_tone(tail_pad, rate, tone_power, tone_level, 3, channels)
    join = plan_join(head, tail, body_frames, rate, spans)

    def joined_body(start: int, stop: int) -> np.ndarray:
        return join.apply(body(start, stop), start)

    joined = _framed(join.lead, joined_body, body_frames, join.trail)
    total = join.lead.shape[0] + body_frames + join.trail.shape[0]
    shifted = [(a + head_pad, b + head_pad) for a, b in spans]
    return _write(
        joined,
        total,
        rate,
        channels,
        target,
        option,
        aim,
        window,
        ceiling,
        size,
        subtype,
        shifted,
        floor_target,
        profile.noise_floor_max_db,
    )


def _write(
    read: Read,
    frames: int,
    rate: int,
    channels: int,
    target: str | Path,
    option: str,
    aim: float | None,
    window: tuple[float, float] | None,
    ceiling: float,
    size: int,
    subtype: str,
    spans: list[tuple[int, int]],
    floor_target: float | None,
    floor_limit: float | None,
) -> MasteredFile:
    """Level-match and write; when the written floor is still over the limit, gate the pauses
    by the excess and write again (as in memory)."""

    def opened(source: Read) -> Any:
        return lambda: ranges(source, frames, size)

    leveled = match_level_blocks(opened(read), rate, channels, option, aim, window)
    floor = NoiseFloorMeter(rate, channels)
    writer = write_level_matched(
        opened(read), target, rate, channels, leveled, ceiling, subtype, [floor]
    )
    measured = floor.finish()
    if (
        floor_limit is not None
        and floor_target is not None
        and measured is not None
        and measured > floor_limit
        and spans
    ):
        regate = plan_gate(
            read, frames, rate, spans, floor_target - leveled.gain_db - (measured - floor_target)
        )

        def gated(start: int, stop: int) -> np.ndarray:
            return regate.apply(read(start, stop), start)

        leveled = match_level_blocks(opened(gated), rate, channels, option, aim, window)
        writer = write_level_matched(
            opened(gated), target, rate, channels, leveled, ceiling, subtype
        )
    return MasteredFile(
        Path(target), writer.frames, rate, channels, writer.sha256, spans, leveled.gain_db
    )


class _Sliced:
    """A FrameSource sliced like an array (what room_tone_power reads)."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        self.shape = (source.frames, source.channels)

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop, _ = key.indices(self.source.frames)
        return self.source.read(start, stop)


def _padded(read: Read, frames: int, head: int, tail: int, channels: int) -> Read:
    zeros = np.zeros((head, channels), np.float32), np.zeros((tail, channels), np.float32)
    return _framed(zeros[0], read, frames, zeros[1])


def _framed(lead: np.ndarray, read: Read, frames: int, trail: np.ndarray) -> Read:
    """lead + the signal `read` of `frames` frames + trail, as one signal read by range."""
    first, last = lead.shape[0], lead.shape[0] + frames

    def joined(start: int, stop: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        if start < first:
            parts.append(lead[start : min(stop, first)])
        if stop > first and start < last:
            parts.append(read(max(start, first) - first, min(stop, last) - first))
        if stop > last:
            parts.append(trail[max(start, last) - last : stop - last])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    return joined
