"""Meters as accumulators: feed blocks in order, read the result at the end. Each keeps a few
numbers per 10 ms at most, so a chapter of any length is measured in bounded memory; the
whole-array functions (`noise_floor_db`, `true_peak_dbtp`, `loudness_lufs`...) feed one array
through the same accumulators.

- LevelMeter: sample peak, plain RMS, clipped samples.
- TruePeakMeter: BS.1770 true peak, 4x oversampled (soxr, streamed), all channels.
- NoiseFloorMeter: ACX Check's floor, the RMS of the quietest 0.4 s window, windows every 0.1 s.
- LoudnessMeter: BS.1770 K-weighted gated integrated loudness and EBU Tech 3342 loudness range,
  with pyloudnorm's weighting filters (k_weighting.py) and block arithmetic (same results to
  ~1e-6 LU) but the filters' state carried across blocks and only 10 ms energies kept.
- quiet_level_db: the room-tone level of a stretch (quieter half of its 10 ms frames).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import soxr

from stepedit_core.signal.gain import gain_to_db
from stepedit_core.signal.k_weighting import KWeighting
from stepedit_core.signal.resample import Resampler

OVERSAMPLE = 4
PEAK_CHUNK_FRAMES = 1 << 18  # frames per oversampling step: bounds the 4x copy's memory
FLOOR_WINDOW_S = 0.4  # ACX Check: RMS over 0.4 s windows...
FLOOR_HOP_S = 0.1  # ...taken 10 times a second; the quietest one is the floor
LEVEL_FRAME_S = 0.01
CLIP_LEVEL = 0.9999
SILENCE_DB = -200.0  # digital silence: still compares as "below -90 dB"
# BS.1770 / Tech 3342 gating, in 10 ms frames
GATE_BLOCK_FRAMES, GATE_HOP_FRAMES = 40, 10  # 400 ms blocks every 100 ms
LRA_BLOCK_FRAMES, LRA_HOP_FRAMES = 300, 9  # 3 s short-term blocks every 90 ms (pyloudnorm's)
LRA_SILENCE_S = 1.5  # Tech 3342 measures the signal followed by 1.5 s of silence
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU, LRA_RELATIVE_GATE_LU = -10.0, -20.0
LRA_PERCENTILES = (10, 95)
CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)  # L, R, C, Ls, Rs
MAX_LOUDNESS_CHANNELS = len(CHANNEL_GAINS)


def _db_power(power: float) -> float:
    return 10.0 * math.log10(power) if power > 1e-20 else SILENCE_DB


class FrameEnergy:
    """Sum of squares (float64, all channels) per frame of `size` samples; the last partial
    frame is held back until `finish`."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._parts: list[np.ndarray] = []
        self._carry: np.ndarray | None = None
        self.frames = 0  # samples fed

    def feed(self, block: np.ndarray) -> None:
        self.frames += block.shape[0]
        if self._carry is not None and self._carry.shape[0]:
            block = np.concatenate([self._carry, block])
        whole = block.shape[0] // self.size * self.size
        if whole:
            shaped = np.ascontiguousarray(block[:whole], dtype=np.float32).reshape(
                whole // self.size, -1
            )
            self._parts.append(np.einsum("ij,ij->i", shaped, shaped, dtype=np.float64))
        self._carry = np.array(block[whole:], dtype=np.float32)

    def energies(self) -> np.ndarray:
        """Complete frames only."""
        if len(self._parts) > 1:
            self._parts = [np.concatenate(self._parts)]
        return self._parts[0] if self._parts else np.zeros(0)

    def remainder(self) -> float:
        carry = self._carry
        return float(np.sum(np.square(carry, dtype=np.float64))) if carry is not None else 0.0


class BlockPeaks:
    """Per block of `size` frames: the largest |sample| (all channels) and the sum of squares
    (float64); a short last block counts as if padded with zeros."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._energy = FrameEnergy(self.size)
        self._peaks: list[np.ndarray] = []
        self._carry = np.zeros(0, dtype=np.float32)

    def feed(self, block: np.ndarray) -> None:
        self._energy.feed(block)
        flat = np.abs(np.asarray(block, dtype=np.float32)).max(axis=1)
        if self._carry.size:
            flat = np.concatenate([self._carry, flat])
        whole = flat.shape[0] // self.size * self.size
        if whole:
            self._peaks.append(flat[:whole].reshape(-1, self.size).max(axis=1).astype(np.float64))
        self._carry = flat[whole:].copy()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        peaks = list(self._peaks)
        energy = [self._energy.energies()]
        if self._carry.size:
            peaks.append(np.array([self._carry.max()], dtype=np.float64))
            energy.append(np.array([self._energy.remainder()]))
        return (
            np.concatenate(peaks) if peaks else np.zeros(0),
            np.concatenate(energy) if energy else np.zeros(0),
        )


class LevelMeter:
    def __init__(self) -> None:
        self.frames = 0
        self.values = 0
        self.sum_squares = 0.0
        self.peak = 0.0
        self.clipped = 0

    def feed(self, block: np.ndarray) -> None:
        if block.size == 0:
            return
        flat = np.ascontiguousarray(block, dtype=np.float32).reshape(-1)
        self.frames += block.shape[0]
        self.values += flat.shape[0]
        self.sum_squares += float(np.dot(flat.astype(np.float64), flat))
        magnitude = np.abs(flat)
        self.peak = max(self.peak, float(magnitude.max()))
        self.clipped += int(np.count_nonzero(magnitude >= CLIP_LEVEL))

    @property
    def rms(self) -> float:
        return math.sqrt(self.sum_squares / self.values) if self.values else 0.0

    @property
    def rms_db(self) -> float:
        return gain_to_db(self.rms)

    @property
    def peak_db(self) -> float:
        return gain_to_db(self.peak)


class TruePeakMeter:
    """Largest |value| of the input and of its 4x oversampled version, all channels."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self._stream = Resampler(sample_rate, sample_rate * OVERSAMPLE, channels)
        self.peak = 0.0

    def feed(self, block: np.ndarray) -> None:
        if block.size:
            self.peak = max(self.peak, float(np.abs(block).max()))
            self._take(self._stream.feed(block))

    def finish(self) -> float:
        self._take(self._stream.flush())
        return self.peak

    def _take(self, up: np.ndarray) -> None:
        if up.size:
            self.peak = max(self.peak, float(np.abs(up).max()))


class NoiseFloorMeter:
    """ACX Check's noise floor (dB); a clip shorter than one window is measured whole."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        self.channels = channels
        self._hops = FrameEnergy(round(FLOOR_HOP_S * sample_rate))
        self._per_window = max(1, round(FLOOR_WINDOW_S / FLOOR_HOP_S))

    def feed(self, block: np.ndarray) -> None:
        self._hops.feed(block)

    def finish(self) -> float | None:
        frames = self._hops.frames
        if frames == 0:
            return None
        energy = self._hops.energies()
        if energy.shape[0] < self._per_window:
            power = (float(energy.sum()) + self._hops.remainder()) / (frames * self.channels)
        else:
            window = np.convolve(energy, np.ones(self._per_window), mode="valid")
            power = float(window.min()) / (self._per_window * self._hops.size * self.channels)
        return round(_db_power(power), 2)


class LoudnessMeter:
    """BS.1770 integrated loudness and Tech 3342 loudness range of a stream."""

    def __init__(self, sample_rate: int, channels: int) -> None:
        if channels > MAX_LOUDNESS_CHANNELS:
            raise ValueError(
                f"BS.1770 loudness is defined for at most {MAX_LOUDNESS_CHANNELS} channels"
            )
        self.rate = sample_rate
        self.channels = channels
        self._weighting = [KWeighting(sample_rate) for _ in range(channels)]  # from rest
        self._parts: list[np.ndarray] = []  # per 10 ms frame, per channel: sum of squares
        self._count = 0  # frames touched so far
        self.frames = 0

    def feed(self, block: np.ndarray) -> None:
        if block.shape[0] == 0:
            return
        data = np.asarray(block, dtype=np.float64).reshape(-1, self.channels)
        weighted = np.empty_like(data)
        for ch in range(self.channels):
            weighted[:, ch] = self._weighting[ch].feed(data[:, ch])
        squares = weighted * weighted
        at = np.arange(self.frames, self.frames + data.shape[0], dtype=np.int64)
        # the 10 ms frame of each sample: frame f starts at sample f * rate // 100
        frame = (100 * (at + 1) + self.rate - 1) // self.rate - 1
        first = int(frame[0])
        rows = np.stack(
            [np.bincount(frame - first, weights=squares[:, ch]) for ch in range(self.channels)],
            axis=1,
        )
        if self._parts and first == self._count - 1:  # the previous block's last frame goes on
            self._parts[-1][-1] += rows[0]
            rows = rows[1:]
        if rows.shape[0]:
            self._parts.append(rows)
        self._count = int(frame[-1]) + 1
        self.frames += data.shape[0]

    def _energies(self, total_frames: int) -> np.ndarray:
        """(total_frames, channels) 10 ms energies, zero past the end (silence)."""
        done = np.concatenate(self._parts) if self._parts else np.zeros((0, self.channels))
        self._parts = [done]
        out = np.zeros((max(total_frames, done.shape[0]), self.channels))
        out[: done.shape[0]] = done
        return out

    def _block_loudness(
        self, seconds: float, block: int, hop: int, count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per gating block: mean square per channel (count, channels) and loudness (LUFS)."""
        energy = self._energies((count - 1) * hop + block)
        cumulative = np.vstack([np.zeros((1, self.channels)), np.cumsum(energy, axis=0)])
        starts = np.arange(count) * hop
        z = (cumulative[starts + block] - cumulative[starts]) / (seconds * self.rate)
        gains = np.asarray(CHANNEL_GAINS[: self.channels])
        with np.errstate(divide="ignore"):
            loudness = -0.691 + 10.0 * np.log10(z @ gains)
        return z, loudness

    def integrated(self) -> float:
        """Integrated loudness (LUFS; -inf when nothing is over the absolute gate)."""
        duration = self.frames / self.rate
        if duration <= GATE_BLOCK_FRAMES / 100:
            raise ValueError("shorter than one 0.4 s BS.1770 block")
        count = int(np.round((duration - 0.4) / 0.1)) + 1
        z, loudness = self._block_loudness(0.4, GATE_BLOCK_FRAMES, GATE_HOP_FRAMES, count)
        gains = np.asarray(CHANNEL_GAINS[: self.channels])
        above = loudness >= ABSOLUTE_GATE_LUFS
        if not above.any():
            return float("-inf")
        relative = -0.691 + 10.0 * math.log10(float(z[above].mean(axis=0) @ gains))
        relative += RELATIVE_GATE_LU
        kept = (loudness > relative) & (loudness > ABSOLUTE_GATE_LUFS)
        if not kept.any():
            return float("-inf")
        return -0.691 + 10.0 * math.log10(float(z[kept].mean(axis=0) @ gains))

    def loudness_range(self) -> float:
        """Tech 3342 loudness range (LU; nan when too quiet)."""
        duration = self.frames / self.rate + LRA_SILENCE_S
        if duration <= LRA_BLOCK_FRAMES / 100:
            raise ValueError("shorter than one 3 s short-term block (with 1.5 s of silence)")
        count = int(np.round((duration - 3.0) / 0.09)) + 1
        _, loudness = self._block_loudness(3.0, LRA_BLOCK_FRAMES, LRA_HOP_FRAMES, count)
        gated = loudness[loudness >= ABSOLUTE_GATE_LUFS]
        if gated.size == 0:
            return float("nan")
        integrated = 10 * math.log10(float(np.mean(10 ** (gated / 10))))
        gated = gated[gated >= integrated + LRA_RELATIVE_GATE_LU]
        if gated.size == 0:
            return float("nan")
        low, high = np.percentile(gated, LRA_PERCENTILES)
        return float(high - low)


# --- whole arrays, through the same accumulators ---------------------------------------------


def feed_all(samples: np.ndarray, *meters: object, frames: int = 1 << 18) -> None:
    for at in range(0, samples.shape[0], frames):
        block = samples[at : at + frames]
        for meter in meters:
            meter.feed(block)  # type: ignore[attr-defined]


def noise_floor_db(samples: np.ndarray, sample_rate: int) -> float | None:
    """The ACX Check floor (see NoiseFloorMeter); None for empty input, -200 for silence."""
    samples = samples.reshape(samples.shape[0], -1)
    meter = NoiseFloorMeter(sample_rate, samples.shape[1])
    feed_all(samples, meter)
    return meter.finish()


def true_peak(samples: np.ndarray, sample_rate: int) -> float:
    """Linear true peak over all channels (4x oversampled)."""
    samples = samples.reshape(samples.shape[0], -1)
    meter = TruePeakMeter(sample_rate, samples.shape[1])
    feed_all(samples, meter)
    return meter.finish()


def true_peak_dbtp(samples: np.ndarray, sample_rate: int) -> float:
    return gain_to_db(true_peak(samples, sample_rate))


def frame_true_peaks(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per input frame, the largest |value| of the 4x oversampled signal from that frame to the
    next, over all channels (float32, one per frame). Streams through soxr a chunk at a time so
    the 4x copy of an hour-long file never sits in memory."""
    frames, channels = samples.shape
    peaks = np.empty(frames, dtype=np.float32)
    stream = soxr.ResampleStream(
        sample_rate, sample_rate * OVERSAMPLE, channels, dtype="float32", quality="HQ"
    )
    carry = np.zeros(0, dtype=np.float32)
    done = 0
    for start in range(0, frames, PEAK_CHUNK_FRAMES):
        chunk = np.ascontiguousarray(samples[start : start + PEAK_CHUNK_FRAMES], dtype=np.float32)
        peaks[start : start + chunk.shape[0]] = _largest_across(np.abs(chunk))
        up = stream.resample_chunk(
            chunk[:, 0] if channels == 1 else chunk, last=start + PEAK_CHUNK_FRAMES >= frames
        )
        level = np.concatenate(
            [carry, _largest_across(np.abs(np.asarray(up).reshape(-1, channels)))]
        )
        whole = level.shape[0] // OVERSAMPLE * OVERSAMPLE
        block = _largest_across(level[:whole].reshape(-1, OVERSAMPLE))[: frames - done]
        span = peaks[done : done + block.shape[0]]
        np.maximum(span, block, out=span)
        done += block.shape[0]
        carry = level[whole:]
    return peaks


def _largest_across(rows: np.ndarray) -> np.ndarray:
    """Row-wise max of a narrow (n, k) array: k-1 elementwise maxima of its columns, much
    faster than max(axis=1) for small k."""
    out = np.array(rows[:, 0], dtype=np.float32)
    for column in range(1, rows.shape[1]):
        np.maximum(out, rows[:, column], out=out)
    return out


def rms_db(blocks: Iterable[np.ndarray]) -> float:
    meter = LevelMeter()
    for block in blocks:
        meter.feed(block)
    return meter.rms_db


def quiet_level_db(samples: np.ndarray, sample_rate: int) -> float | None:
    """Room-tone level of a stretch: RMS (dB) of the quieter half of its 10 ms frames; -200 for
    digital silence, None for less than one frame."""
    size = max(1, round(LEVEL_FRAME_S * sample_rate))
    frames = FrameEnergy(size)
    frames.feed(samples)
    return quiet_level_of(frames.energies(), size * samples.shape[1])


def quiet_level_of(energies: np.ndarray, values_per_frame: int) -> float | None:
    """quiet_level_db from 10 ms frame energies (sum of squares over `values_per_frame`)."""
    count = energies.shape[0]
    if count == 0:
        return None
    quiet = np.sort(energies / values_per_frame)[: max(1, count // 2)]
    return _db_power(float(quiet.mean()))
