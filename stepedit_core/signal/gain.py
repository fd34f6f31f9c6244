"""Small array helpers: dB <-> gain, equal-power crossfades, fitting a length."""

from __future__ import annotations

import numpy as np


def fit_length(samples: np.ndarray, frames: int) -> np.ndarray:
    """Trim or extend (frames, channels) to exactly `frames` rows.

    Extension repeats the last frame: it is only ever used for the few samples a resampler or
    the stretcher rounds away, and it never writes a run of digital zeros into the signal.
    """
    frames = max(1, int(frames))
    if samples.shape[0] >= frames:
        return np.ascontiguousarray(samples[:frames], dtype=np.float32)
    if samples.shape[0] == 0:
        samples = np.zeros((1, samples.shape[1]), dtype=np.float32)
    pad = frames - samples.shape[0]
    return np.pad(samples, ((0, pad), (0, 0)), mode="edge").astype(np.float32, copy=False)


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def gain_to_db(gain: float) -> float:
    return float(20.0 * np.log10(gain)) if gain > 0 else float("-inf")


def crossfade(outgoing: np.ndarray, incoming: np.ndarray) -> np.ndarray:
    """Equal-power crossfade of two (frames, channels) stretches of the same length: meant for
    joining room tone to room tone, which are uncorrelated, so the joined power stays level."""
    phase = (np.arange(outgoing.shape[0], dtype=np.float64) + 0.5) / outgoing.shape[0]
    fade_in = np.sin(0.5 * np.pi * phase)[:, None]
    fade_out = np.cos(0.5 * np.pi * phase)[:, None]
    return (outgoing * fade_out + incoming * fade_in).astype(np.float32)
