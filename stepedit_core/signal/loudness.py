"""Loudness: BS.1770 integrated loudness (pyloudnorm) or ACX RMS, then a true-peak limiter.

True peak is estimated the BS.1770 way, by 4x oversampling (soxr) and taking the largest
absolute value (stepedit_core.signal.meters). The limiter is a look-ahead gain rider: for every
sample it needs the gain that keeps the oversampled peaks around it under the ceiling; a running
minimum followed by a moving average of the same width turns that into a smooth gain curve that
is never above the need (each averaged value is a minimum over a window that contains the
sample). Channels share one gain, so the stereo image does not move. Normalisation and limiting
alternate a few times, because limiting takes a little loudness away (a secant step on the
measured loudness per dB of gain). A target that would take more than MAX_PUSH_DB of limiting
fails the item instead of crushing it.

`loudness=acx` masters into ACX's whole profile, not only its level and peak: mastering.py also
brings the noise floor between words under -60 dB and gives the clip ACX's head and tail of room
tone.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from stepedit_core.foundation.edits import LOUDNESS_PROFILES
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.signal.gain import db_to_gain, gain_to_db
from stepedit_core.signal.meters import frame_true_peaks, true_peak

CHUNK_FRAMES = 1 << 18  # frames per RMS step: no squared copy of a long clip
DEFAULT_CEILING_DBTP = -1.0  # numeric LUFS targets
LIMITER_WINDOW_S = 0.01  # half-width of the gain smoothing: 20 ms ramps around each peak
# how far an output sample of the gain rider can depend on the input: 2 x the window, plus
# soxr's oversampling filter, with room to spare (the blockwise limiter overlaps this much)
LIMIT_REACH_S = 0.25
CEILING_MARGIN_DB = 0.05  # the limiter aims this far under the ceiling (resampling error)
ABSOLUTE_GATE_LUFS = -70.0  # below this BS.1770 gating keeps nothing: nothing to normalise
ACX_RMS_DB = -20.0
ACX_PEAK_DBFS = -3.0
TOLERANCE_DB = 0.05  # stop refining once this close to the target
ACCEPT_DB = 0.5  # EBU R128's production tolerance: further off than this fails the item
ROUNDS = 8
MAX_PUSH_DB = 10.0  # the most gain the limiter may be asked to absorb beyond the plain match
MIN_SLOPE = 0.05
T = TypeVar("T")


def target_for(option: str) -> tuple[str, float, float]:
    """(mode, target, ceiling dBTP) for a loudness option; mode is 'lufs' or 'rms' (acx)."""
    if option == "acx":
        return "rms", ACX_RMS_DB, ACX_PEAK_DBFS
    if option in LOUDNESS_PROFILES:
        target, ceiling = LOUDNESS_PROFILES[option]
        return "lufs", target, ceiling
    return "lufs", float(option), DEFAULT_CEILING_DBTP


def match_level(
    samples: np.ndarray,
    sample_rate: int,
    option: str,
    target_db: float | None = None,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float]:
    """Gain and limit `samples` to the option's level (or `target_db`) under its ceiling;
    returns the output and the gain (dB) applied before the limiter, which is the gain of
    everything below the peaks. With a `window` (a profile's level range) any level reached
    inside it is accepted; the clip is refused only when the window is out of reach."""
    mode, target, ceiling = target_for(option)
    if target_db is not None:
        target = target_db
    measure = _rms_meter() if mode == "rms" else _lufs_meter(samples, sample_rate)

    def trial(gain_db: float) -> tuple[float, np.ndarray]:
        out = limit(samples * db_to_gain(gain_db), sample_rate, ceiling)
        return measure(out), out

    return search_gain(
        measure(samples), option, target, window, trial, lambda: true_peak(samples, sample_rate)
    )


def search_gain(
    level: float,
    option: str,
    target: float,
    window: tuple[float, float] | None,
    trial: Callable[[float], tuple[float, T]],
    input_peak: Callable[[], float],
) -> tuple[T, float]:
    """The gain (dB) that brings a signal at `level` to `target` (or into `window`) under the
    option's ceiling: `trial(gain_db)` gains and limits the signal and returns the level reached
    with the output; returns the accepted trial's output and its gain. Shared by the in-memory
    and the blockwise level match, so both take the same steps."""
    mode, _, ceiling = target_for(option)
    if not math.isfinite(level) or level < ABSOLUTE_GATE_LUFS:
        raise ItemFailure(
            "too_quiet",
            f"audio is too quiet to normalise (level {level:.1f} dB, gate {ABSOLUTE_GATE_LUFS} dB)",
        )
    matched = target - level  # the plain gain that would reach the target without a limiter
    gain_db, error, previous = matched, 0.0, None
    out: T | None = None
    used = matched
    for _ in range(ROUNDS):
        reached, out = trial(gain_db)
        used = gain_db
        error = target - reached
        if abs(error) <= TOLERANCE_DB:
            return out, used
        slope = 1.0  # LU gained per dB of gain: 1 until the limiter starts eating the gain
        if previous is not None and gain_db != previous[0]:
            slope = (reached - previous[1]) / (gain_db - previous[0])
            slope = min(1.0, max(MIN_SLOPE, slope))
        previous = (gain_db, reached)
        gain_db = min(matched + MAX_PUSH_DB, gain_db + error / slope)
        if gain_db == previous[0]:
            break
    reached = target - error
    inside = window[0] <= reached <= window[1] if window is not None else abs(error) <= ACCEPT_DB
    if inside and out is not None:
        return out, used
    unit = "dB RMS" if mode == "rms" else "LUFS"
    goal = (
        f"{target:g} {unit}"
        if window is None
        else f"no level in {window[0]:g}..{window[1]:g} {unit}"
    )
    raise ItemFailure(
        "loudness_unreachable",
        f"{goal} is not reachable under a {ceiling:g} dBTP ceiling without more than "
        f"{MAX_PUSH_DB:g} dB of limiting (reached {reached:.1f} {unit} aiming at {target:.1f}; "
        f"the peaks stand {gain_to_db(input_peak()) - level:.1f} dB over the "
        f"level, {ceiling - target:.1f} dB fit)",
    )


def limit(samples: np.ndarray, sample_rate: int, ceiling_dbtp: float) -> np.ndarray:
    """Keep the true peak of `samples` at or under `ceiling_dbtp`, touching only the peaks."""
    out = ride_peaks(samples, sample_rate, ceiling_dbtp)
    # the gain curve is smooth but not constant, so check again and trim what is left
    return out * np.float32(trim_for(true_peak(out, sample_rate), ceiling_dbtp))


def trim_for(peak: float, ceiling_dbtp: float) -> float:
    """The last, constant turn-down of a limited signal whose true peak is still over."""
    return (
        db_to_gain(ceiling_dbtp - CEILING_MARGIN_DB) / peak
        if peak > db_to_gain(ceiling_dbtp)
        else 1.0
    )


def ride_peaks(samples: np.ndarray, sample_rate: int, ceiling_dbtp: float) -> np.ndarray:
    """The limiter's gain rider alone (no final trim): each output sample depends only on the
    input within LIMIT_REACH_S of it, which is what lets the blockwise limiter overlap blocks."""
    ceiling = db_to_gain(ceiling_dbtp - CEILING_MARGIN_DB)
    out = np.asarray(samples, dtype=np.float32)
    peaks = frame_true_peaks(out, sample_rate)
    if peaks.max(initial=0.0) <= ceiling:
        return out
    need = np.maximum(peaks, np.float32(1e-12), out=peaks)  # reuse the buffers: long clips
    np.divide(np.float32(ceiling), need, out=need)
    np.minimum(need, np.float32(1.0), out=need)
    # imported here: scipy.ndimage costs ~0.2 s to import, and most processes never limit
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    width = 2 * max(1, round(LIMITER_WINDOW_S * sample_rate)) + 1
    gain = minimum_filter1d(need, width, mode="nearest")
    uniform_filter1d(gain, width, mode="nearest", output=need)
    out = out * need[:, None]
    del gain, need, peaks
    return out


def _rms_meter():
    def measure(samples: np.ndarray) -> float:
        flat = samples.reshape(-1)
        total = sum(  # float64 sums of float32 chunks: exact enough, no squared copy
            float(np.dot(flat[i : i + CHUNK_FRAMES].astype(np.float64), flat[i : i + CHUNK_FRAMES]))
            for i in range(0, flat.shape[0], CHUNK_FRAMES)
        )
        return gain_to_db(math.sqrt(total / max(1, flat.shape[0])))

    return measure


def _lufs_meter(samples: np.ndarray, sample_rate: int):
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    if samples.shape[0] <= meter.block_size * sample_rate:
        raise ItemFailure(
            "too_short",
            f"{samples.shape[0] / sample_rate:.3f} s is too short for BS.1770 loudness "
            f"(needs more than one {meter.block_size} s gating block)",
        )
    if samples.shape[1] > 5:
        raise ItemFailure(
            "unsupported_channels",
            f"BS.1770 loudness is measured on at most 5 channels, got {samples.shape[1]}",
        )

    def measure(data: np.ndarray) -> float:
        # float32 in: pyloudnorm copies and filters the whole clip, float64 would double that
        # (the result differs from a float64 measurement by ~1e-7 LU)
        return float(meter.integrated_loudness(np.asarray(data, dtype=np.float32)))

    return measure
