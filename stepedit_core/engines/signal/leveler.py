"""Leveler for narration: rides slow level drifts, then tames the peaks that give speech a high
crest factor, so that matching the level lands inside a delivery window (ACX: -23..-18 dB RMS
under a -3 dBFS peak) with only a few dB of limiting.

Both stages are computed on a coarse grid and applied as one smooth gain curve shared by all
channels (the stereo image does not move):

1. Drift. The speech level over a sliding DRIFT_WINDOW_S (10 ms frames inside speech only, so
   pauses do not pull it down) is brought towards the clip's overall speech level. Differences
   under DRIFT_DEADBAND_DB are phrasing and are left alone; a correction is capped at
   MAX_DRIFT_DB. In pauses the gain is held from the speech around them (interpolated), so room
   tone does not pump; the curve is smoothed over DRIFT_SMOOTH_S.
2. Crest. Only when a plain gain to any level inside the window would take more than
   LIMIT_BUDGET_DB of limiting: a look-ahead compressor (ratio RATIO, soft knee KNEE_DB) on the
   peak envelope of 1 ms blocks: the gain each block needs is turned into a smooth curve by a
   running minimum and a moving average of the same width (never above the need, ramps of
   HOLD_S). Its threshold is found by bisection so that a level a little inside the window
   (COMPRESSED_AIM_OVER_FLOOR_DB over the lowest aim) needs at most LIMIT_BUDGET_DB of
   limiting; it reduces no peak by more than MAX_COMPRESSION_DB.

The least change wins: a clip that fits the target is not touched; one that fits lower in the
window is only aimed lower (`aim_db`, the level to match; speech keeps its dynamics); only a clip
that fits nowhere in the window is compressed. Drift riding runs on clips of at least
MIN_DRIFT_WINDOWS drift windows (a shorter clip has no drift to speak of).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import minimum_filter1d, uniform_filter1d

from stepedit_core.signal.meters import BlockPeaks, FrameEnergy

FRAME_S = 0.01  # drift analysis frames
DRIFT_WINDOW_S = 4.0  # a phrase or two: slower than syllables, faster than a chapter's drift
DRIFT_SMOOTH_S = 1.0
DRIFT_DEADBAND_DB = 2.0
MAX_DRIFT_DB = 12.0
MIN_SPEECH_SHARE = 0.1  # a window with less speech than this says nothing about the level
BLOCK_S = 0.001  # crest analysis blocks
HOLD_S = 0.02
RATIO = 4.0
KNEE_DB = 6.0
MAX_COMPRESSION_DB = 15.0
MIN_THRESHOLD_OVER_RMS_DB = 6.0  # never compress the body of the speech, only what sticks out
LIMIT_BUDGET_DB = 3.0  # the most limiting the level match should need after levelling
TRUE_PEAK_MARGIN_DB = 0.5  # block peaks are sample peaks; true peaks can sit a little higher
WINDOW_MARGIN_DB = 0.5  # aim this far inside a window's edge
COMPRESSED_AIM_OVER_FLOOR_DB = 1.0  # where compressed speech is aimed, over the lowest aim
MIN_DRIFT_WINDOWS = 2  # a clip shorter than this many drift windows has no drift to ride
BISECT_STEPS = 14
APPLY_CHUNK = 1 << 20


@dataclass
class Leveled:
    samples: np.ndarray
    aim_db: float  # the RMS level to match
    drift_db: float  # largest drift correction applied (dB, either way)
    compression_db: float  # largest peak reduction by the compressor (dB)


def level_speech(
    samples: np.ndarray,
    sample_rate: int,
    spans: list[tuple[int, int]],
    target_db: float,
    window: tuple[float, float],
    ceiling_db: float,
) -> Leveled:
    """Level `samples` (frames, channels) so RMS `target_db` (or a level inside `window`) is
    reachable under `ceiling_db` with at most LIMIT_BUDGET_DB of limiting."""
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    stats = LevelStats(sample_rate)
    for start in range(0, samples.shape[0], APPLY_CHUNK):
        stats.feed(samples[start : start + APPLY_CHUNK])
    plan = plan_leveling(stats, sample_rate, samples.shape[1], spans, target_db, window, ceiling_db)
    if plan.gain_db is None:
        return Leveled(samples, plan.aim_db, 0.0, 0.0)
    out = np.empty_like(samples)
    for start in range(0, samples.shape[0], APPLY_CHUNK):
        stop = min(samples.shape[0], start + APPLY_CHUNK)
        out[start:stop] = plan.apply(samples[start:stop], start)
    return Leveled(out, plan.aim_db, plan.drift_db, plan.compression_db)


class LevelStats:
    """What the leveler needs to know of a signal, gathered a block at a time: peak and energy
    per BLOCK_S block, and energy per FRAME_S frame."""

    def __init__(self, sample_rate: int) -> None:
        self.blocks = BlockPeaks(max(1, round(BLOCK_S * sample_rate)))
        self.frames = FrameEnergy(max(1, round(FRAME_S * sample_rate)))

    def feed(self, block: np.ndarray) -> None:
        self.blocks.feed(block)
        self.frames.feed(block)


@dataclass
class LevelPlan:
    """The leveler's decision: a gain curve (dB per BLOCK_S block; None: leave the signal as
    it is) and the level to match."""

    aim_db: float
    gain_db: np.ndarray | None
    block: int
    drift_db: float = 0.0
    compression_db: float = 0.0

    def __post_init__(self) -> None:
        if self.gain_db is not None:
            self._centres = (np.arange(self.gain_db.shape[0]) + 0.5) * self.block - 0.5
            self._linear = 10 ** (self.gain_db / 20)

    def apply(self, block: np.ndarray, start: int) -> np.ndarray:
        """`block` (frames from `start`) times the gain curve, interpolated between block
        centres (only the centres around the block are looked at: the cost is the block's)."""
        if self.gain_db is None:
            return block
        stop = start + block.shape[0]
        low = max(0, int(np.searchsorted(self._centres, start)) - 1)
        high = int(np.searchsorted(self._centres, stop)) + 1
        where = np.arange(start, stop)
        gain = np.interp(where, self._centres[low:high], self._linear[low:high])
        return block * gain.astype(np.float32)[:, None]


def plan_leveling(
    stats: LevelStats,
    sample_rate: int,
    channels: int,
    spans: list[tuple[int, int]],
    target_db: float,
    window: tuple[float, float],
    ceiling_db: float,
) -> LevelPlan:
    block = stats.blocks.size
    peaks, energy = stats.blocks.finish()
    total = stats.frames.frames
    frames = total * channels
    power = stats.frames.energies() / (stats.frames.size * channels)
    drift = _drift_gain_db(power, total, sample_rate, spans, block, peaks.shape[0])
    leveled_peak_db = _db(peaks) + drift
    leveled_energy = energy * 10 ** (drift / 10)
    floor_aim = window[0] + WINDOW_MARGIN_DB
    plain_peak = float(np.max(leveled_peak_db, initial=-200.0))
    plain_rms = _rms_db(leveled_energy, frames)
    need = _limiting(plain_peak, plain_rms, target_db, ceiling_db)
    compress = np.zeros_like(drift)
    if need <= LIMIT_BUDGET_DB:
        aim = target_db
    elif need - (target_db - floor_aim) <= LIMIT_BUDGET_DB:  # a lower level in the window fits
        aim = target_db - (need - LIMIT_BUDGET_DB)
    else:  # compress just enough to sit a little inside the window, or as far as allowed
        goal = floor_aim + COMPRESSED_AIM_OVER_FLOOR_DB
        speech_rms_db = _speech_rms_db(leveled_energy, spans, block, channels)
        compress = _compressor_gain_db(
            leveled_peak_db,
            leveled_energy,
            frames,
            goal,
            ceiling_db,
            speech_rms_db,
            block,
            sample_rate,
        )
        peak = float(np.max(leveled_peak_db + compress))
        rms = _rms_db(leveled_energy * 10 ** (compress / 10), frames)
        aim = max(
            floor_aim, goal - max(0.0, _limiting(peak, rms, goal, ceiling_db) - LIMIT_BUDGET_DB)
        )
    drift_db = float(np.max(np.abs(drift), initial=0.0))
    compression_db = float(-np.min(compress, initial=0.0))
    if drift_db == 0.0 and compression_db == 0.0:
        return LevelPlan(aim, None, block)
    return LevelPlan(aim, drift + compress, block, drift_db, compression_db)


def _db(power_or_peak: np.ndarray) -> np.ndarray:
    return 20 * np.log10(np.maximum(power_or_peak, 1e-10))


def _rms_db(energy: np.ndarray, frames: int) -> float:
    return 10 * math.log10(max(1e-30, float(energy.sum()) / frames))


def _limiting(peak_db: float, rms_db: float, target_db: float, ceiling_db: float) -> float:
    """dB of limiting the level match needs: the gain to the target takes the peaks this far
    over the ceiling."""
    return peak_db + TRUE_PEAK_MARGIN_DB + (target_db - rms_db) - ceiling_db


def _speech_mask(spans: list[tuple[int, int]], size: int, count: int) -> np.ndarray:
    mask = np.zeros(count, dtype=np.float64)
    for start, end in spans:
        mask[start // size : -(-end // size)] = 1.0
    return mask


def _speech_rms_db(
    energy: np.ndarray, spans: list[tuple[int, int]], block: int, channels: int
) -> float:
    mask = _speech_mask(spans, block, energy.shape[0])
    count = float(mask.sum()) * block * channels
    if count == 0:
        count, mask = float(energy.shape[0] * block * channels), np.ones_like(mask)
    return 10 * math.log10(max(1e-30, float(energy @ mask) / count))


def _drift_gain_db(
    power: np.ndarray,
    total: int,
    sample_rate: int,
    spans: list[tuple[int, int]],
    block: int,
    blocks: int,
) -> np.ndarray:
    """Drift correction (dB) per crest block; zeros when no window strays past the deadband.
    `power`: mean square per FRAME_S frame of a signal of `total` frames."""
    size = max(1, round(FRAME_S * sample_rate))
    count = power.shape[0]
    zeros = np.zeros(blocks)
    if total < MIN_DRIFT_WINDOWS * DRIFT_WINDOW_S * sample_rate or not spans:
        return zeros
    mask = _speech_mask(spans, size, count)
    if mask.sum() == 0:
        return zeros
    overall = 10 * math.log10(max(1e-30, float(power @ mask / mask.sum())))
    width = max(1, round(DRIFT_WINDOW_S / FRAME_S))
    share = uniform_filter1d(mask, width, mode="nearest")
    local = uniform_filter1d(power * mask, width, mode="nearest") / np.maximum(share, 1e-12)
    known = (mask > 0) & (share >= MIN_SPEECH_SHARE)
    if not known.any():
        return zeros
    diff = overall - 10 * np.log10(np.maximum(local[known], 1e-30))
    correction = np.sign(diff) * np.clip(np.abs(diff) - DRIFT_DEADBAND_DB, 0.0, MAX_DRIFT_DB)
    if not np.any(correction):
        return zeros
    where = np.flatnonzero(known)
    curve = np.interp(np.arange(count), where, correction)  # held across pauses
    curve = uniform_filter1d(curve, max(1, round(DRIFT_SMOOTH_S / FRAME_S)), mode="nearest")
    centres = (np.arange(blocks) + 0.5) * block / size - 0.5
    return np.interp(centres, np.arange(count), curve)


def _compressor_gain_db(
    peak_db: np.ndarray,
    energy: np.ndarray,
    frames: int,
    target_db: float,
    ceiling_db: float,
    speech_rms_db: float,
    block: int,
    sample_rate: int,
) -> np.ndarray:
    """Compressor gain (dB, <= 0) per block with the highest threshold that meets the limiting
    budget; zeros when the plain level match already does."""
    zeros = np.zeros_like(peak_db)
    if peak_db.size == 0:
        return zeros
    width = 2 * max(1, round(HOLD_S * sample_rate / block)) + 1

    def curve(threshold: float) -> np.ndarray:
        over = peak_db - threshold
        slope = 1.0 / RATIO - 1.0
        knee = np.where(over > -KNEE_DB / 2, slope * (over + KNEE_DB / 2) ** 2 / (2 * KNEE_DB), 0)
        gain = np.where(over >= KNEE_DB / 2, slope * over, knee)
        gain = np.maximum(gain, -MAX_COMPRESSION_DB)
        return uniform_filter1d(minimum_filter1d(gain, width, mode="nearest"), width)

    def need(gain: np.ndarray) -> float:
        peak = float(np.max(peak_db + gain))
        rms = _rms_db(energy * 10 ** (gain / 10), frames)
        return _limiting(peak, rms, target_db, ceiling_db)

    if need(zeros) <= LIMIT_BUDGET_DB:
        return zeros
    high = float(peak_db.max())
    low = min(high, speech_rms_db + MIN_THRESHOLD_OVER_RMS_DB)
    if need(curve(low)) > LIMIT_BUDGET_DB:
        return curve(low)  # as far as it may go; the level match aims lower in the window
    for _ in range(BISECT_STEPS):  # the highest threshold (least compression) that is enough
        middle = 0.5 * (low + high)
        if need(curve(middle)) <= LIMIT_BUDGET_DB:
            low = middle
        else:
            high = middle
    return curve(low)
