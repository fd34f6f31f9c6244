"""Room tone: the level and spectrum of a clip's pauses, noise made to match them, and
equal-power joins of that noise to the audio (mastering's head and tail, a delivered part's
cut edges).

A pause's MARGIN_S next to speech is left out of every measurement (soft onsets and word ends),
except at the file's own ends. Room tone is white noise shaped by the pauses' average power
spectrum (TONE_FFT bins, per channel), or pink noise when there is no usable pause.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stepedit_core.signal.meters import FrameEnergy, quiet_level_of

MARGIN_S = 0.05  # room tone kept at full level next to every word

FADE_S = 0.05  # gate ramps

TONE_FFT = 1024

PINK_CORNER_HZ = 50.0

SEED = 20260

BED_TILE_S = 60.0  # a bed is made this much at a time

BED_SEED = 1000

LEVEL_FRAME_S = 0.01

Read = Callable[[int, int], np.ndarray]  # frames [start, stop) of a signal


def pause_spans(frames: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    bounds = [0] + [edge for span in spans for edge in span] + [frames]
    return [(a, b) for a, b in zip(bounds[0::2], bounds[1::2], strict=True) if b > a]


def inner_pause(pause: tuple[int, int], frames: int, margin: int) -> tuple[int, int]:
    """A pause without the margins next to speech (the file's own ends need none)."""
    start, end = pause
    return (start + margin if start > 0 else 0), (end - margin if end < frames else frames)


def pause_level_db(
    samples: np.ndarray, sample_rate: int, spans: list[tuple[int, int]]
) -> float | None:
    """Room-tone level over all pauses (their inner parts) together."""
    return pause_level_of(lambda a, b: samples[a:b], samples.shape[0], sample_rate, spans)


def pause_level_of(
    read: Read, frames: int, sample_rate: int, spans: list[tuple[int, int]]
) -> float | None:
    """`pause_level_db` of a signal of `frames` frames read a stretch at a time."""
    margin = round(MARGIN_S * sample_rate)
    size = max(1, round(LEVEL_FRAME_S * sample_rate))
    energy = FrameEnergy(size)  # fed the inner parts one after another: as if joined
    channels = 0
    for pause in pause_spans(frames, spans):
        start, end = inner_pause(pause, frames, margin)
        if end > start:
            part = read(start, end)
            channels = part.shape[1]
            energy.feed(part)
    if channels == 0:
        return None
    return quiet_level_of(energy.energies(), size * channels)


def room_tone_power(
    samples: np.ndarray, sample_rate: int, spans: list[tuple[int, int]]
) -> np.ndarray | None:
    """Average power spectrum (TONE_FFT bins, per channel) of the clip's pauses, or None when
    the pauses hold less than one FFT frame or are digital silence."""
    frames = samples.shape[0]
    margin = round(MARGIN_S * sample_rate)
    window = np.hanning(TONE_FFT)[:, None]
    total, count = np.zeros((TONE_FFT // 2 + 1, samples.shape[1])), 0
    for pause in pause_spans(frames, spans):
        start, end = inner_pause(pause, frames, margin)
        if end - start < TONE_FFT:
            continue
        stretch = samples[start:end]  # one read per pause (samples may be a file)
        for at in range(0, end - start - TONE_FFT + 1, TONE_FFT // 2):
            segment = stretch[at : at + TONE_FFT].astype(np.float64) * window
            total += np.abs(np.fft.rfft(segment, axis=0)) ** 2
            count += 1
    if count == 0 or total.sum() <= 1e-20:
        return None
    return total / count


def synth_room_tone(
    frames: int,
    sample_rate: int,
    power: np.ndarray | None,
    level_db: float,
    seed: int,
    channels: int | None = None,
) -> np.ndarray:
    """`frames` of noise with the spectrum `power` (pink when None) at `level_db` RMS."""
    channels = channels or (power.shape[1] if power is not None else 1)
    if frames <= 0:
        return np.zeros((0, channels), dtype=np.float32)
    rng = np.random.default_rng(SEED + seed)
    spectrum = np.fft.rfft(rng.standard_normal((frames, channels)), axis=0)
    freqs = np.fft.rfftfreq(frames, 1.0 / sample_rate)
    if power is None:
        shape = np.repeat((1.0 / np.maximum(freqs, PINK_CORNER_HZ))[:, None], channels, axis=1)
    else:
        grid = np.fft.rfftfreq(TONE_FFT, 1.0 / sample_rate)
        shape = np.stack(
            [np.interp(freqs, grid, power[:, c % power.shape[1]]) for c in range(channels)], 1
        )
    tone = np.fft.irfft(spectrum * np.sqrt(shape), n=frames, axis=0)
    rms = float(np.sqrt(np.mean(tone**2)))
    if rms > 0:
        tone *= 10 ** (level_db / 20) / rms
    return tone.astype(np.float32)


class BedTone:
    """A room-tone bed of `frames` frames (see `synth_room_tone`), made a tile of BED_TILE_S at
    a time so it can be laid under audio of any length; a bed no longer than one tile is
    exactly `synth_room_tone(frames, ...)`."""

    def __init__(
        self,
        frames: int,
        sample_rate: int,
        power: np.ndarray | None,
        level_db: float,
        channels: int,
    ) -> None:
        self.frames = frames
        self.tile = max(1, round(BED_TILE_S * sample_rate))
        self._args = (sample_rate, power, level_db)
        self.channels = channels
        self._cached: tuple[int, np.ndarray] | None = None

    def _tile(self, index: int) -> np.ndarray:
        if self._cached is None or self._cached[0] != index:
            length = min(self.tile, self.frames - index * self.tile)
            rate, power, level = self._args
            seed = 1 if index == 0 else BED_SEED + index
            self._cached = (index, synth_room_tone(length, rate, power, level, seed, self.channels))
        return self._cached[1]

    def range(self, start: int, stop: int) -> np.ndarray:
        parts = []
        at = start
        while at < stop:
            index = at // self.tile
            offset = at - index * self.tile
            tile = self._tile(index)
            take = min(stop - at, tile.shape[0] - offset)
            parts.append(tile[offset : offset + take])
            at += take
        return np.concatenate(parts) if parts else np.zeros((0, self.channels), np.float32)


@dataclass
class Join:
    """How the head and tail of room tone join the body (see `join_room_tone`): `lead` goes
    before the body, `trail` after it, and the body's first / last `fade` frames are mixed."""

    lead: np.ndarray
    trail: np.ndarray
    fade: int
    body_frames: int
    head_mix: np.ndarray | None = None
    head_keep: np.ndarray | float = 1.0
    tail_mix: np.ndarray | None = None
    tail_keep: np.ndarray | float = 1.0

    def apply(self, block: np.ndarray, start: int) -> np.ndarray:
        """The body's `block` (frames from `start`) with the joins mixed in."""
        fade, stop = self.fade, start + block.shape[0]
        edges = (
            (0, self.head_mix, self.head_keep),
            (self.body_frames - fade, self.tail_mix, self.tail_keep),
        )
        if fade == 0 or not any(
            mix is not None and begin < stop and begin + fade > start for begin, mix, _ in edges
        ):
            return block
        block = block.astype(np.float32, copy=True)
        for begin, mix, keep in edges:
            low, high = max(begin, start), min(begin + fade, stop)
            if mix is None or high <= low:
                continue
            part = slice(low - begin, high - begin)
            factor = keep[part] if isinstance(keep, np.ndarray) else keep
            block[low - start : high - start] = (
                block[low - start : high - start] * factor + mix[part]
            )
        return block


def plan_join(
    head: np.ndarray,
    tail: np.ndarray,
    body_frames: int,
    sample_rate: int,
    spans: list[tuple[int, int]],
) -> Join:
    fade = min(round(FADE_S * sample_rate), body_frames // 2)
    if fade == 0:
        return Join(head, tail, 0, body_frames)
    phase = (np.arange(fade) + 0.5) / fade
    rise, fall = np.sin(0.5 * np.pi * phase)[:, None], np.cos(0.5 * np.pi * phase)[:, None]
    join = Join(head[:0], tail[:0], fade, body_frames)
    if head.shape[0]:
        speech_at_start = spans[0][0] < fade
        tone = np.concatenate([head, _extend(head, fade)])
        join.head_mix, join.head_keep = tone[-fade:] * fall, 1.0 if speech_at_start else rise
        join.lead = tone[:-fade]
    if tail.shape[0]:
        speech_at_end = spans[-1][1] > body_frames - fade
        tone = np.concatenate([_extend(tail[::-1], fade)[::-1], tail])
        join.tail_mix, join.tail_keep = tone[:fade] * rise, 1.0 if speech_at_end else fall
        join.trail = tone[fade:]
    return join


def join_room_tone(
    head: np.ndarray,
    body: np.ndarray,
    tail: np.ndarray,
    sample_rate: int,
    spans: list[tuple[int, int]],
) -> np.ndarray:
    """head + body + tail. Each join is an equal-power crossfade over the body's first / last
    FADE_S when that part is room tone; where speech starts or ends right at the edge, the tone
    only fades out over it (added under the speech, which keeps its full level)."""
    join = plan_join(head, tail, body.shape[0], sample_rate, spans)
    if join.fade == 0:
        return np.concatenate([head, body, tail]).astype(np.float32)
    pieces = [join.lead, join.apply(body, 0), join.trail]
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)


def _extend(tone: np.ndarray, frames: int) -> np.ndarray:
    """`frames` more of the same room tone (a time-reversed copy: same spectrum and level)."""
    reps = -(-frames // max(1, tone.shape[0]))
    return np.concatenate([tone[::-1]] * reps)[:frames]
