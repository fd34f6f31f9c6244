"""Per-round measurements kept in every iteration record."""

from __future__ import annotations

import math

import numpy as np

from stepedit_core.audio import Audio


def _db(value: float) -> float | None:
    return round(20.0 * math.log10(value), 2) if value > 0 else None


def basic_metrics(audio: Audio) -> dict[str, float | int | None]:
    """Duration, sample peak and RMS (dBFS, unweighted) and the count of clipped samples."""
    samples = audio.samples
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return {
        "duration_s": round(audio.duration, 4),
        "peak_dbfs": _db(peak),
        "rms_dbfs": _db(rms),
        "clipped_samples": int(np.count_nonzero(np.abs(samples) >= 0.9999)),
    }
