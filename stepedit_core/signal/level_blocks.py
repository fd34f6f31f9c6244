"""The `loudness` level match in blocks, for audio of any length: one pass measures the level,
each trial of the gain search (loudness.search_gain, the same steps as in memory) is one pass
through the limiter that measures what it would write, and a last pass writes the result.

The limiter's gain rider (loudness.ride_peaks) is local: an output sample depends on the input
within LIMIT_REACH_S of it. Blocks are limited with that much of their neighbours on each side,
so the blockwise output equals the in-memory one up to float rounding (and soxr's streamed
oversampling, ~1e-6); the final constant trim needs the whole output's true peak, measured by
the trial pass before the write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.signal.blocks import BlockWriter, block_frames
from stepedit_core.signal.gain import db_to_gain, gain_to_db
from stepedit_core.signal.loudness import (
    LIMIT_REACH_S,
    ride_peaks,
    search_gain,
    target_for,
    trim_for,
)
from stepedit_core.signal.meters import (
    MAX_LOUDNESS_CHANNELS,
    LevelMeter,
    LoudnessMeter,
    TruePeakMeter,
)

OpenBlocks = Callable[[], Iterable[np.ndarray]]


@dataclass(frozen=True)
class Leveled:
    gain_db: float  # before the limiter
    trim: float  # the limiter's final constant turn-down (linear, <= 1)


def overlapped(
    blocks: Iterable[np.ndarray], chunk: int, margin: int
) -> Iterator[tuple[np.ndarray, int, int]]:
    """Chunks of `chunk` frames with up to `margin` frames of their neighbours on each side:
    (piece, where the chunk starts in it, its length). At the stream's ends there is no
    neighbour, as for a whole array."""
    buffer: np.ndarray | None = None
    base = 0  # stream position of buffer[0]
    centre = 0  # stream position of the next chunk
    for block in blocks:
        buffer = block if buffer is None else np.concatenate([buffer, block])
        while base + buffer.shape[0] - centre >= chunk + margin:
            low = max(base, centre - margin)
            piece = buffer[low - base : centre + chunk + margin - base]
            yield piece, centre - low, chunk
            centre += chunk
            drop = max(0, centre - margin - base)
            buffer, base = buffer[drop:], base + drop
    if buffer is None:
        return
    end = base + buffer.shape[0]
    while centre < end:
        low = max(base, centre - margin)
        yield buffer[low - base :], centre - low, min(chunk, end - centre)
        centre += chunk


def limited_blocks(
    open_blocks: OpenBlocks,
    sample_rate: int,
    gain_db: float,
    ceiling_dbtp: float,
    trim: float = 1.0,
) -> Iterator[np.ndarray]:
    """The input gained by `gain_db`, through the limiter's gain rider, times `trim`."""
    gain = np.float32(db_to_gain(gain_db))
    margin = round(LIMIT_REACH_S * sample_rate)
    chunk = block_frames(sample_rate)
    for piece, at, length in overlapped((block * gain for block in open_blocks()), chunk, margin):
        out = ride_peaks(piece, sample_rate, ceiling_dbtp)[at : at + length]
        yield out * np.float32(trim) if trim != 1.0 else out


def _meter(mode: str, sample_rate: int, channels: int) -> LevelMeter | LoudnessMeter:
    if mode == "rms":
        return LevelMeter()
    if channels > MAX_LOUDNESS_CHANNELS:
        raise ItemFailure(
            "unsupported_channels",
            f"BS.1770 loudness is measured on at most 5 channels, got {channels}",
        )
    return LoudnessMeter(sample_rate, channels)


def _level(meter: LevelMeter | LoudnessMeter, sample_rate: int) -> float:
    if isinstance(meter, LevelMeter):
        return meter.rms_db
    if meter.frames <= 0.4 * sample_rate:
        raise ItemFailure(
            "too_short",
            f"{meter.frames / sample_rate:.3f} s is too short for BS.1770 loudness "
            "(needs more than one 0.4 s gating block)",
        )
    return meter.integrated()


def match_level_blocks(
    open_blocks: OpenBlocks,
    sample_rate: int,
    channels: int,
    option: str,
    target_db: float | None = None,
    window: tuple[float, float] | None = None,
) -> Leveled:
    """loudness.match_level over a stream that can be opened again (`open_blocks()`); returns
    the gain and trim to write with `limited_blocks`."""
    mode, target, ceiling = target_for(option)
    if target_db is not None:
        target = target_db
    meter = _meter(mode, sample_rate, channels)
    for block in open_blocks():
        meter.feed(block)
    level = _level(meter, sample_rate)

    def trial(gain_db: float) -> tuple[float, float]:
        measured, peak = _meter(mode, sample_rate, channels), TruePeakMeter(sample_rate, channels)
        for block in limited_blocks(open_blocks, sample_rate, gain_db, ceiling):
            measured.feed(block)
            peak.feed(block)
        trim = trim_for(peak.finish(), ceiling)
        return _level(measured, sample_rate) + gain_to_db(trim), trim

    def input_peak() -> float:
        peak = TruePeakMeter(sample_rate, channels)
        for block in open_blocks():
            peak.feed(block)
        return peak.finish()

    trim, gain_db = search_gain(level, option, target, window, trial, input_peak)
    return Leveled(gain_db, trim)


def write_level_matched(
    open_blocks: OpenBlocks,
    target: str | Path,
    sample_rate: int,
    channels: int,
    leveled: Leveled,
    ceiling_dbtp: float,
    subtype: str = "PCM_24",
    meters: Iterable[object] = (),
) -> BlockWriter:
    """Write the level-matched stream to `target` (FLAC, or WAV for subtype FLOAT), feeding
    `meters` (QC) the blocks on the way."""
    fmt = "WAV" if subtype == "FLOAT" else "FLAC"
    with BlockWriter(target, sample_rate, channels, format=fmt, subtype=subtype) as writer:
        for block in limited_blocks(
            open_blocks, sample_rate, leveled.gain_db, ceiling_dbtp, leveled.trim
        ):
            writer.write(block)
            for meter in meters:
                meter.feed(block)  # type: ignore[attr-defined]
    return writer
