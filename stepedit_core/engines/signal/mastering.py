"""Mastering into a whole delivery profile (ACX): level and peak, noise floor, head and tail.

Speech found by silero-vad is touched only by the level gain and the true-peak limiter that
every `loudness` edit applies, and, where a profile gives a level window (ACX's -23..-18 dB RMS)
and the speech does not fit it with a plain gain, by the narration leveler (leveler.py: slow
drift riding and peak compression, so at most a few dB of limiting remain). Any level reached
inside the window passes; the clip is refused only when none is reachable. Around the speech:

1. Head and tail. The room tone before the first and after the last word is brought into the
   profile's window: a head or tail within the window (0.1 s guard) is kept; a longer one is cut
   to the target (0.75 s / 1.5 s for ACX), keeping the part next to speech; a shorter one is
   extended to the target with room tone.
2. Noise floor. Each pause (between words, head and tail) longer than its margins and fades gets
   a constant attenuation (a range-limited gate, i.e. a downward expander with a fixed floor)
   that puts its room tone at the profile's floor target (-66 dB for ACX, 6 dB under its -60 dB
   limit) after the level gain. MARGIN_S of room tone next to each word keeps full level (soft
   onsets and word ends), and the attenuation ramps in and out over FADE_S (raised cosine), so no
   gate chatter and no cut into speech. A pause's room tone level is the RMS of the quieter half
   of its 10 ms frames, so a breath in a pause does not make the gate clamp the room tone harder.
   Pauses already under the target are left alone; nothing is gated to digital zero.
3. Room tone for the head and tail is synthesised from the clip's own pauses: white noise shaped
   by their average spectrum (per channel), at the floor target, joined with equal-power
   crossfades. A clip with no usable pause gets pink noise at the target. A clip whose pauses are
   near dead silence after the gain (within 6 dB of ACX's -90 dB warning) gets a room-tone bed at
   the target under the whole clip (inaudible under speech: 40 dB or more below it).
4. The level is matched last (loudness.match_level), so RMS and true peak are exactly what the
   plain `loudness` edit gives; the floor is measured afterwards the ACX Check way and, if a
   pause is still over the limit, gated once more by the excess.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepedit_core.engines.signal.leveler import level_speech
from stepedit_core.engines.signal.loudness import match_level, target_for
from stepedit_core.foundation.stages import ItemFailure
from stepedit_core.quality.delivery import Profile, profile_for_loudness
from stepedit_core.signal.meters import FrameEnergy, noise_floor_db, quiet_level_of
from stepedit_core.signal.meters import quiet_level_db as quiet_level_db  # re-exported
from stepedit_core.signal.vad import SPEECH_MIN_SILENCE_S

MARGIN_S = 0.05  # room tone kept at full level next to every word
FADE_S = 0.05  # gate ramps
EDGE_GUARD_S = 0.1  # a head/tail this far inside the window is kept as it is
TONE_FFT = 1024
PINK_CORNER_HZ = 50.0
BED_MARGIN_DB = 6.0  # a floor this close to the "dead silence" warning gets a room-tone bed
FLOOR_FALLBACK_MARGIN_DB = 6.0  # target under the limit when a profile names no target
SEED = 20260
BED_TILE_S = 60.0  # a bed is made this much at a time
BED_SEED = 1000
LEVEL_FRAME_S = 0.01

Read = Callable[[int, int], np.ndarray]  # frames [start, stop) of a signal


def normalize(samples: np.ndarray, sample_rate: int, option: str, vad: Any = None) -> np.ndarray:
    """The `loudness` edit. A delivery profile that also limits the noise floor and the head and
    tail (acx) is mastered into whole (see `master`; `vad`: a loaded SileroVad to reuse);
    otherwise the level is matched under the true-peak ceiling."""
    profile = profile_for_loudness(option)
    if profile is not None and profile.masters_room_tone:
        return master(samples, sample_rate, option, profile, vad)
    return match_level(samples, sample_rate, option)[0]


def master(
    samples: np.ndarray, sample_rate: int, option: str, profile: Profile, vad: Any = None
) -> np.ndarray:
    """`loudness=<option>` mastered into `profile` (see the module docstring).

    ACX's level is the RMS of the whole file, room tone included, so padding a very short clip
    (a single word) with 2 s of room tone can push the speech past what the limiter may absorb.
    Then the head and tail are left as they were (QC reports them) rather than failing the item.
    """
    try:
        return _master(samples, sample_rate, option, profile, vad, edges=True)
    except ItemFailure as failure:
        if failure.code != "loudness_unreachable":
            raise
        return _master(samples, sample_rate, option, profile, vad, edges=False)


def _master(
    samples: np.ndarray,
    sample_rate: int,
    option: str,
    profile: Profile,
    vad: Any,
    edges: bool,
) -> np.ndarray:
    if vad is None:
        from stepedit_core.signal.vad import shared_vad

        vad = shared_vad()
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    window = profile.rms_range_db
    spans = vad.speech(samples, sample_rate, SPEECH_MIN_SILENCE_S)
    if not spans:  # nothing to protect or to place room tone around: the level only
        return match_level(samples, sample_rate, option, window=window)[0]
    tone_power = room_tone_power(samples, sample_rate, spans)
    head_pad = tail_pad = 0
    if edges:
        samples, spans, head_pad, tail_pad = conform_edges(samples, sample_rate, spans, profile)
    aim = None
    mode, target_db, ceiling_db = target_for(option)
    if window is not None and mode == "rms":
        leveled = level_speech(samples, sample_rate, spans, target_db, window, ceiling_db)
        samples, aim = leveled.samples, leveled.aim_db
    # the gain the final level match will apply (pads are room tone: their energy is negligible)
    probe = np.pad(samples, ((head_pad, tail_pad), (0, 0)))
    _, gain_db = match_level(probe, sample_rate, option, aim, window)
    target = floor_target_db(profile)
    if target is None:
        body = samples
    else:
        body = gate_pauses(samples, sample_rate, spans, target - gain_db)
        quiet = pause_level_db(body, sample_rate, spans)
        warn = profile.noise_floor_warn_below_db
        if warn is not None and quiet is not None and quiet + gain_db < warn + BED_MARGIN_DB:
            bed = BedTone(body.shape[0], sample_rate, tone_power, target - gain_db, body.shape[1])
            body = body + bed.range(0, body.shape[0])
    tone_level = (target if target is not None else -60.0) - gain_db
    head = synth_room_tone(head_pad, sample_rate, tone_power, tone_level, 2, body.shape[1])
    tail = synth_room_tone(tail_pad, sample_rate, tone_power, tone_level, 3, body.shape[1])
    joined = join_room_tone(head, body, tail, sample_rate, spans)
    out, _ = match_level(joined, sample_rate, option, aim, window)
    limit = profile.noise_floor_max_db
    floor = noise_floor_db(out, sample_rate)
    if limit is not None and target is not None and floor is not None and floor > limit:
        shifted = [(a + head_pad, b + head_pad) for a, b in spans]
        gated = gate_pauses(joined, sample_rate, shifted, target - gain_db - (floor - target))
        out, _ = match_level(gated, sample_rate, option, aim, window)
    return out


def floor_target_db(profile: Profile) -> float | None:
    if profile.noise_floor_target_db is not None:
        return profile.noise_floor_target_db
    if profile.noise_floor_max_db is not None:
        return profile.noise_floor_max_db - FLOOR_FALLBACK_MARGIN_DB
    return None


def conform_edges(
    samples: np.ndarray, sample_rate: int, spans: list[tuple[int, int]], profile: Profile
) -> tuple[np.ndarray, list[tuple[int, int]], int, int]:
    """Cut a too-long head / tail to the profile's target; return the frames of room tone to add
    at each end for a too-short one, with the samples and the speech spans after the cut."""
    frames = samples.shape[0]
    head_cut, tail_cut, head_pad, tail_pad = edge_plan(frames, sample_rate, spans, profile)
    samples = samples[head_cut : frames - tail_cut]
    spans = [(a - head_cut, b - head_cut) for a, b in spans]
    return samples, spans, head_pad, tail_pad


def edge_plan(
    frames: int, sample_rate: int, spans: list[tuple[int, int]], profile: Profile
) -> tuple[int, int, int, int]:
    """(head cut, tail cut, head pad, tail pad) in frames: see `conform_edges`."""
    head, tail = spans[0][0], frames - spans[-1][1]
    head_cut, head_pad = _edge_change(head, sample_rate, profile.head_s, profile.head_target_s)
    tail_cut, tail_pad = _edge_change(tail, sample_rate, profile.tail_s, profile.tail_target_s)
    return head_cut, tail_cut, head_pad, tail_pad


def _edge_change(
    edge: int, rate: int, window: tuple[float, float] | None, target: float | None
) -> tuple[int, int]:
    """(frames to cut, frames to add) to bring one edge of `edge` frames into `window`."""
    if window is None:
        return 0, 0
    goal = round((target if target is not None else sum(window) / 2) * rate)
    if edge > round((window[1] - EDGE_GUARD_S) * rate):
        return edge - goal, 0
    if edge < round((window[0] + EDGE_GUARD_S) * rate):
        return 0, goal - edge
    return 0, 0


def _pauses(frames: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    bounds = [0] + [edge for span in spans for edge in span] + [frames]
    return [(a, b) for a, b in zip(bounds[0::2], bounds[1::2], strict=True) if b > a]


def _inner(pause: tuple[int, int], frames: int, margin: int) -> tuple[int, int]:
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
    for pause in _pauses(frames, spans):
        start, end = _inner(pause, frames, margin)
        if end > start:
            part = read(start, end)
            channels = part.shape[1]
            energy.feed(part)
    if channels == 0:
        return None
    return quiet_level_of(energy.energies(), size * channels)


@dataclass
class Gate:
    """Per pause: (start, end, floor gain, ramps in, ramps out); ramps of `fade` frames."""

    pauses: list[tuple[int, int, float, bool, bool]]
    fade: int

    def __post_init__(self) -> None:
        self._ends = [pause[1] for pause in self.pauses]

    def apply(self, block: np.ndarray, start: int) -> np.ndarray:
        """`block` (frames from `start`) with the gate's gain."""
        stop = start + block.shape[0]
        touched = []
        # pauses are sorted and apart: skip to the first that ends after `start`
        for pause in self.pauses[bisect.bisect_right(self._ends, start) :]:
            if pause[0] >= stop:
                break
            touched.append(pause)
        if not touched:
            return block
        gain = np.ones(block.shape[0], dtype=np.float32)
        fade = self.fade
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)  # 0 -> 1
        for begin, end, floor, ramp_in, ramp_out in touched:
            curve = np.full(end - begin, floor, dtype=np.float64)
            if ramp_in:
                curve[:fade] = 1.0 + (floor - 1.0) * ramp
            if ramp_out:
                curve[-fade:] = floor + (1.0 - floor) * ramp
            low, high = max(begin, start), min(end, stop)
            gain[low - start : high - start] = curve[low - begin : high - begin]
        return block * gain[:, None]


def plan_gate(
    read: Read, frames: int, sample_rate: int, spans: list[tuple[int, int]], target_db: float
) -> Gate:
    """Which pauses to attenuate, and how far, so each one's room tone sits at `target_db`."""
    margin, fade = round(MARGIN_S * sample_rate), max(1, round(FADE_S * sample_rate))
    pauses = []
    for pause in _pauses(frames, spans):
        start, end = _inner(pause, frames, margin)
        ramp_in, ramp_out = pause[0] > 0, pause[1] < frames
        if end - start < (ramp_in + ramp_out) * fade + fade:
            continue  # too short to gate without a ramp running into speech
        level = quiet_level_db(read(start, end), sample_rate)
        if level is None or level <= target_db:
            continue
        pauses.append((start, end, 10 ** ((target_db - level) / 20), ramp_in, ramp_out))
    return Gate(pauses, fade)


def gate_pauses(
    samples: np.ndarray, sample_rate: int, spans: list[tuple[int, int]], target_db: float
) -> np.ndarray:
    """Attenuate each pause so its room tone sits at `target_db` (same gain on all channels)."""
    gate = plan_gate(lambda a, b: samples[a:b], samples.shape[0], sample_rate, spans, target_db)
    return gate.apply(samples, 0)


def room_tone_power(
    samples: np.ndarray, sample_rate: int, spans: list[tuple[int, int]]
) -> np.ndarray | None:
    """Average power spectrum (TONE_FFT bins, per channel) of the clip's pauses, or None when
    the pauses hold less than one FFT frame or are digital silence."""
    frames = samples.shape[0]
    margin = round(MARGIN_S * sample_rate)
    window = np.hanning(TONE_FFT)[:, None]
    total, count = np.zeros((TONE_FFT // 2 + 1, samples.shape[1])), 0
    for pause in _pauses(frames, spans):
        start, end = _inner(pause, frames, margin)
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
