"""Speed: time-stretch that keeps pitch and formants (Signalsmith Stretch via python-stretch)."""

from __future__ import annotations

import numpy as np

from stepedit_core.signal.gain import fit_length

# Signalsmith Stretch randomises phases from a seed; a fixed seed makes the edit reproducible.
STRETCH_SEED = 20240917


def time_stretch(samples: np.ndarray, sample_rate: int, factor: float) -> np.ndarray:
    """Play `samples` (frames, channels) `factor` x as fast: duration becomes duration / factor.

    python-stretch takes and returns (channels, frames) float32 arrays, compensates the
    stretcher's latency itself, and returns round(frames / factor) frames; the result is still
    trimmed or extended to that exact length so callers can rely on it.
    """
    from python_stretch import Signalsmith

    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    frames, channels = samples.shape
    target = round(frames / factor)
    if factor == 1.0:
        return fit_length(samples, target)
    stretch = Signalsmith.Stretch(STRETCH_SEED)
    stretch.preset(channels, float(sample_rate))
    stretch.setTimeFactor(float(factor))
    out = stretch.process(np.ascontiguousarray(samples.T, dtype=np.float32))
    return fit_length(np.asarray(out, dtype=np.float32).T, target)
