"""Objective judges for the signal edits: measured, not asked, so every edit type has a verdict.

Each compares a round's output with its input:
- `speed`: duration ratio within 10% of the one asked for, and pitch kept (median F0 within one
  semitone, where both have voiced frames);
- `vad`: no pause between words longer than the limit (plus 0.15 s of tolerance);
- `denoise`: noise floor lowered by at least 3 dB, or already at or below -60 dB;
- `loudness`: integrated loudness within 1 LU of the target (`acx`: RMS inside -23..-18 dB).
"""

from __future__ import annotations

import math

import numpy as np

from stepedit_core.foundation.audio import Audio, to_mono
from stepedit_core.foundation.edits import LOUDNESS_PROFILES, EditSpec
from stepedit_core.quality.qc import loudness_lufs, noise_floor_db, speech_spans

OBJECTIVE_EDITS = ("speed", "vad", "denoise", "loudness")
SPEED_TOLERANCE = 0.10
PITCH_TOLERANCE_ST = 1.0
VAD_DEFAULT_LIMIT_S = 0.3
VAD_TOLERANCE_S = 0.15
DENOISE_MIN_DROP_DB = 3.0
DENOISE_CLEAN_DB = -60.0
LOUDNESS_TOLERANCE_LU = 1.0
ACX_RMS = (-23.0, -18.0)


def judge_edit(edit: EditSpec, before: Audio, after: Audio) -> tuple[bool, str]:
    """(landed, what was measured) for one signal edit of a round."""
    if edit.type == "speed":
        return _speed(edit, before, after)
    if edit.type == "vad":
        return _vad(edit, after)
    if edit.type == "denoise":
        return _denoise(before, after)
    if edit.type == "loudness":
        return _loudness(edit, after)
    raise ValueError(f"no objective judge for {edit.type}")


def _speed(edit: EditSpec, before: Audio, after: Audio) -> tuple[bool, str]:
    wanted = 1.0 / edit.speed_factor
    ratio = after.duration / before.duration if before.duration else math.inf
    on_time = abs(ratio / wanted - 1.0) <= SPEED_TOLERANCE
    f0_before, f0_after = median_f0(before), median_f0(after)
    if f0_before is None or f0_after is None:
        return on_time, f"duration ratio {ratio:.3f} (wanted {wanted:.3f}); pitch not measurable"
    shift = 12.0 * math.log2(f0_after / f0_before)
    landed = on_time and abs(shift) <= PITCH_TOLERANCE_ST
    return landed, f"duration ratio {ratio:.3f} (wanted {wanted:.3f}); pitch {shift:+.2f} st"


def _vad(edit: EditSpec, after: Audio) -> tuple[bool, str]:
    limit = float(edit.option) if edit.option else VAD_DEFAULT_LIMIT_S
    spans = speech_spans(after.samples, after.sample_rate)
    if not spans:
        return False, "no speech found in the output"
    gaps = [(b[0] - a[1]) / after.sample_rate for a, b in zip(spans, spans[1:], strict=False)]
    longest = max(gaps, default=0.0)
    return longest <= limit + VAD_TOLERANCE_S, f"longest pause {longest:.2f} s (limit {limit} s)"


def _denoise(before: Audio, after: Audio) -> tuple[bool, str]:
    floor_before = noise_floor_db(before.samples, before.sample_rate)
    floor_after = noise_floor_db(after.samples, after.sample_rate)
    if floor_before is None or floor_after is None:
        return False, "noise floor not measurable"
    landed = floor_after <= DENOISE_CLEAN_DB or floor_before - floor_after >= DENOISE_MIN_DROP_DB
    return landed, f"noise floor {floor_before:.1f} -> {floor_after:.1f} dB"


def _loudness(edit: EditSpec, after: Audio) -> tuple[bool, str]:
    option = str(edit.option)
    if option == "acx":
        rms = 20.0 * math.log10(float(np.sqrt(np.mean(np.square(after.samples)))) + 1e-12)
        return ACX_RMS[0] <= rms <= ACX_RMS[1], f"RMS {rms:.1f} dB (ACX {ACX_RMS[0]}..{ACX_RMS[1]})"
    target = LOUDNESS_PROFILES[option][0] if option in LOUDNESS_PROFILES else float(option)
    lufs, why = loudness_lufs(after.samples, after.sample_rate)
    if lufs is None:
        return False, f"loudness not measurable: {why}"
    return abs(lufs - target) <= LOUDNESS_TOLERANCE_LU, f"{lufs:.1f} LUFS (target {target})"


def median_f0(audio: Audio, low: float = 60.0, high: float = 500.0) -> float | None:
    """Median F0 (Hz) of the voiced 40 ms frames, by normalised autocorrelation; None if no
    frame is clearly voiced."""
    mono = to_mono(audio).samples[:, 0].astype(np.float64)
    rate = audio.sample_rate
    size, hop = int(0.04 * rate), int(0.02 * rate)
    lags = np.arange(max(1, int(rate / high)), int(rate / low) + 1)
    if size <= lags[-1] or mono.size < size:
        return None
    estimates = []
    for start in range(0, mono.size - size, hop):
        frame = mono[start : start + size] - mono[start : start + size].mean()
        energy = float(np.dot(frame, frame))
        if energy < 1e-6:
            continue
        corr = np.correlate(frame, frame, mode="full")[size - 1 :]
        norm = corr[lags] / energy
        best = int(np.argmax(norm))
        if norm[best] > 0.5:
            estimates.append(rate / lags[best])
    return float(np.median(estimates)) if estimates else None
