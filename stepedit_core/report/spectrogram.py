"""Spectrogram thumbnails: a magnitude STFT in dB, drawn with a fixed colour ramp."""

from __future__ import annotations

import numpy as np

from stepedit_core.foundation.audio import Audio, to_mono
from stepedit_core.report.png import png_bytes

FLOOR_DB = -80.0  # below the loudest bin: drawn as the darkest colour
# colour ramp from silence to loudest: navy, violet, red-orange, yellow, near white
_RAMP = np.array(
    [[12, 10, 40], [80, 18, 120], [190, 50, 80], [250, 150, 40], [252, 250, 190]],
    dtype=np.float64,
)


def _colours(level: np.ndarray) -> np.ndarray:
    """level in [0, 1] -> RGB via linear interpolation along the ramp."""
    position = np.clip(level, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, len(_RAMP) - 1)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[high] * frac).astype(np.uint8)


def mel(hz: np.ndarray | float) -> np.ndarray | float:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_rows(power: np.ndarray, rate: int, rows: int) -> np.ndarray:
    """Mean power per image row, rows evenly spaced in mel: speech harmonics get room instead
    of being squeezed into the bottom rows of a linear axis."""
    bins = power.shape[1]
    nyquist = rate / 2.0
    hz_edges = 700.0 * (10 ** (np.linspace(0.0, mel(nyquist), rows + 1) / 2595.0) - 1.0)
    edges = np.round(hz_edges / nyquist * (bins - 1)).astype(int)
    low = np.minimum(edges[:-1], bins - 1)
    high = np.maximum(edges[1:], low + 1)  # every row covers at least one bin
    total = np.concatenate([np.zeros((power.shape[0], 1)), np.cumsum(power, axis=1)], axis=1)
    return (total[:, high] - total[:, low]) / (high - low)


def spectrogram_db(audio: Audio, columns: int = 320, rows: int = 96) -> np.ndarray:
    """(rows, columns) dB image on a mel axis, low frequencies at the bottom, 0 dB = the
    loudest cell."""
    samples = to_mono(audio).samples[:, 0].astype(np.float64)
    n_fft = 512 if audio.sample_rate <= 24000 else 1024
    if samples.size < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.size))
    frames = min(columns, max(1, (samples.size - n_fft) // (n_fft // 4) + 1))
    starts = np.linspace(0, samples.size - n_fft, frames).astype(int)
    window = np.hanning(n_fft)
    spectrum = np.abs(np.fft.rfft(samples[starts[:, None] + np.arange(n_fft)] * window, axis=1))
    power = _mel_rows(spectrum**2, audio.sample_rate, rows)
    db = 10.0 * np.log10(np.maximum(power, 1e-20))
    db -= db.max()
    image = np.maximum(db, FLOOR_DB).T[::-1]
    if image.shape[1] < columns:  # short clips: stretch columns to the full width
        image = image[:, np.linspace(0, image.shape[1] - 1, columns).astype(int)]
    return image


def spectrogram_png(audio: Audio, columns: int = 320, rows: int = 96) -> bytes:
    db = spectrogram_db(audio, columns, rows)
    return png_bytes(_colours(1.0 - db / FLOOR_DB))
