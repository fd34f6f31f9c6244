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
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepedit_core.engines.signal.leveler import level_speech
from stepedit_core.foundation.stages import ItemFailure
from stepedit_core.quality.delivery import Profile, profile_for_loudness
from stepedit_core.quality.edges import conform_edges
from stepedit_core.signal.loudness import match_level, target_for
from stepedit_core.signal.meters import noise_floor_db, quiet_level_db
from stepedit_core.signal.room_tone import (
    FADE_S,
    MARGIN_S,
    BedTone,
    Read,
    inner_pause,
    join_room_tone,
    pause_level_db,
    pause_spans,
    room_tone_power,
    synth_room_tone,
)
from stepedit_core.signal.vad import SPEECH_MIN_SILENCE_S

BED_MARGIN_DB = 6.0  # a floor this close to the "dead silence" warning gets a room-tone bed
FLOOR_FALLBACK_MARGIN_DB = 6.0  # target under the limit when a profile names no target


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
    for pause in pause_spans(frames, spans):
        start, end = inner_pause(pause, frames, margin)
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
