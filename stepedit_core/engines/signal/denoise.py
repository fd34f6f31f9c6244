"""Denoise: RNNoise at 48 kHz (pyrnnoise ships librnnoise with its weights built in).

We call librnnoise's `rnnoise_process_frame` through pyrnnoise's ctypes binding on float frames
in the 16-bit range RNNoise expects, instead of pyrnnoise's file/stream helpers: those round
every frame to int16 and resample through PyAV, while here soxr resamples to 48 kHz and back and
the signal stays float. Each channel gets a fresh RNNoise state, so items do not leak into each
other. The input is mixed back in 35 dB down (an attenuation limit): RNNoise takes noise-only
stretches to about -100 dBFS, which 16-bit delivery turns into digital silence (ACX flags a floor
under -90 dB); the mix keeps a faint room tone and costs nothing audible. When pyrnnoise can not
be loaded at all, `load_denoiser` falls back to noisereduce's non-stationary spectral gating and
says so in its `backend` name.
"""

from __future__ import annotations

import ctypes
import logging

import numpy as np
import soxr

from stepedit_core.signal.gain import fit_length

log = logging.getLogger(__name__)

RNNOISE_RATE = 48000
RNNOISE_FRAME = 480
# Output frame k of librnnoise 0.2 holds input frame k-2: 960 samples at 48 kHz (measured by
# cross-correlating a denoised harmonic signal with its clean version).
RNNOISE_DELAY = 960
INT16_SCALE = 32768.0
ATTENUATION_LIMIT_DB = 35.0
CHUNK_FRAMES = 1 << 18  # source frames per streaming step (~11 s at 24 kHz)


class RNNoiseDenoiser:
    backend = "rnnoise"

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        if rnnoise.FRAME_SIZE != RNNOISE_FRAME or rnnoise.SAMPLE_RATE != RNNOISE_RATE:
            raise RuntimeError(
                f"unexpected librnnoise framing {rnnoise.FRAME_SIZE} @ {rnnoise.SAMPLE_RATE} Hz"
            )
        self._lib = rnnoise.lib
        self._create = rnnoise.create
        self._destroy = rnnoise.destroy

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Denoise (frames, channels) float32 at any rate; returns the same shape and rate.

        Streams through soxr and RNNoise a chunk at a time, so memory stays bounded by the chunk
        even for hour-long files (RNNoise itself is a streaming denoiser).
        """
        frames, channels = samples.shape
        resample = sample_rate != RNNOISE_RATE
        up = _stream(sample_rate, RNNOISE_RATE, channels) if resample else None
        down = _stream(RNNOISE_RATE, sample_rate, channels) if resample else None
        states = [self._create() for _ in range(channels)]
        if not all(states):
            raise MemoryError("rnnoise_create returned NULL")
        out = np.empty((frames, channels), dtype=np.float32)
        pending = np.zeros((0, channels), dtype=np.float32)  # 48 kHz input short of a frame
        skip, written = RNNOISE_DELAY, 0
        try:
            for start in range(0, frames, CHUNK_FRAMES):
                last = start + CHUNK_FRAMES >= frames
                chunk = np.ascontiguousarray(samples[start : start + CHUNK_FRAMES], np.float32)
                wide = up.resample_chunk(chunk, last=last) if up is not None else chunk
                parts = [pending, np.asarray(wide, dtype=np.float32).reshape(-1, channels)]
                if last:  # push RNNoise's delay (and the last partial frame) out with zeros
                    parts.append(np.zeros((RNNOISE_DELAY + RNNOISE_FRAME, channels), np.float32))
                pending = np.concatenate(parts)
                usable = pending.shape[0] // RNNOISE_FRAME * RNNOISE_FRAME
                clean = self._frames(pending[:usable], states)
                pending = pending[usable:]
                drop = min(skip, clean.shape[0])
                clean, skip = clean[drop:], skip - drop
                narrow = down.resample_chunk(clean, last=last) if down is not None else clean
                count = min(narrow.shape[0], frames - written)
                out[written : written + count] = np.asarray(narrow).reshape(-1, channels)[:count]
                written += count
        finally:
            for state in states:
                self._destroy(state)
        out = fit_length(out[:written], frames)
        return out + np.float32(10 ** (-ATTENUATION_LIMIT_DB / 20)) * samples

    def _frames(self, wide: np.ndarray, states: list) -> np.ndarray:
        """Run whole 480-sample frames of (n, channels) 48 kHz audio through RNNoise, in place."""
        planar = np.ascontiguousarray(wide.T * INT16_SCALE, dtype=np.float32)
        pointer = ctypes.POINTER(ctypes.c_float)
        step = RNNOISE_FRAME * planar.itemsize
        for channel, state in enumerate(states):
            base = planar[channel].ctypes.data
            for offset in range(0, planar.shape[1] * planar.itemsize, step):
                frame = ctypes.cast(base + offset, pointer)
                self._lib.rnnoise_process_frame(state, frame, frame)  # in place is supported
        return planar.T / np.float32(INT16_SCALE)


class SpectralGateDenoiser:
    """Fallback: noisereduce's non-stationary spectral gating at the source rate."""

    backend = "noisereduce"

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        import noisereduce

        out = noisereduce.reduce_noise(y=samples.T, sr=sample_rate, stationary=False, n_jobs=1)
        return fit_length(
            np.asarray(out, dtype=np.float32).reshape(samples.shape[1], -1).T, samples.shape[0]
        )


def load_denoiser() -> RNNoiseDenoiser | SpectralGateDenoiser:
    try:
        return RNNoiseDenoiser()
    except (ImportError, OSError, RuntimeError) as exc:
        log.warning("pyrnnoise unavailable (%s); denoise falls back to noisereduce", exc)
        return SpectralGateDenoiser()


def _stream(rate_in: int, rate_out: int, channels: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")
