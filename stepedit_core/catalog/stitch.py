"""Join edited segments of a chapter back into one clip, inside the pauses they were cut in.

Segments come from segments.plan, so each join sits in a pause: the end of segment i and the
start of segment i+1 are room tone. Each join is:

1. Room tone matched. The room-tone level (quiet_level_db: the quieter half of 10 ms frames) of
   the pause before the join (after segment i's last word) and after it (before segment i+1's
   first word) is measured, and each side is brought to their mean (in dB) by a gain that ramps
   in over the pause, from 0 dB MARGIN_S after / before the word to the full gain at the join.
   Speech is not touched. Two sides an engine left at different noise floors meet at one level.
2. An equal-power crossfade of CROSSFADE_S centred on the join: each side is continued past the
   join by a time-reversed copy of its own last / first samples (the same room tone, and no step
   at the join), and the two are crossfaded (sin / cos). Room tone on both sides is
   uncorrelated, so its power is kept through the fade. The stitched clip is exactly as long
   as the segments together.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stepedit_core.signal.meters import quiet_level_db

CROSSFADE_S = 0.02
MARGIN_S = 0.05  # room tone kept at its own level next to every word
Spans = Callable[[np.ndarray, int], list[tuple[int, int]]]


def stitch(segments: list[np.ndarray], rate: int, speech: Spans) -> tuple[np.ndarray, list[int]]:
    """Segments (frames, channels) joined in order; returns the clip and each join's frame.
    `speech(samples, rate)` gives a segment's speech spans (silero-vad in the product)."""
    if not segments:
        raise ValueError("nothing to stitch: no segments")
    pieces = [np.ascontiguousarray(s, dtype=np.float32).copy() for s in segments]
    spans = [speech(p, rate) for p in pieces]
    for i in range(len(pieces) - 1):
        _match_room_tone(pieces[i], spans[i], pieces[i + 1], spans[i + 1], rate)
    joins, out = [], [pieces[0]]
    at = pieces[0].shape[0]
    for piece in pieces[1:]:
        fade = min(round(CROSSFADE_S * rate), 2 * out[-1].shape[0], 2 * piece.shape[0])
        _crossfade(out[-1], piece, fade - fade % 2)
        joins.append(at)
        out.append(piece)
        at += piece.shape[0]
    return np.concatenate(out), joins


def _match_room_tone(
    left: np.ndarray,
    left_spans: list[tuple[int, int]],
    right: np.ndarray,
    right_spans: list[tuple[int, int]],
    rate: int,
) -> None:
    """Bring the pause at the end of `left` and at the start of `right` to one level (in
    place)."""
    margin = round(MARGIN_S * rate)
    tail_from = (left_spans[-1][1] + margin) if left_spans else 0
    head_to = (right_spans[0][0] - margin) if right_spans else right.shape[0]
    if tail_from >= left.shape[0] or head_to <= 0:
        return  # speech runs up to the join: no room tone on one side to match
    tail_level = quiet_level_db(left[tail_from:], rate)
    head_level = quiet_level_db(right[:head_to], rate)
    if tail_level is None or head_level is None or min(tail_level, head_level) <= -150:
        return
    mean = 0.5 * (tail_level + head_level)
    left[tail_from:] *= _ramp(left.shape[0] - tail_from, mean - tail_level)[:, None]
    right[:head_to] *= _ramp(head_to, mean - head_level)[::-1, None]


def _ramp(frames: int, gain_db: float) -> np.ndarray:
    """0 dB rising to `gain_db` over `frames` (raised cosine), float32."""
    phase = 0.5 - 0.5 * np.cos(np.pi * (np.arange(frames) + 0.5) / frames)
    return (10 ** (gain_db * phase / 20)).astype(np.float32)


def _crossfade(left: np.ndarray, right: np.ndarray, fade: int) -> None:
    """Equal-power crossfade over `fade` frames centred on the join, in place: left's last
    fade/2 and right's first fade/2 frames are replaced, so no length is lost."""
    half = fade // 2
    if half == 0:
        return
    # each side continued across the join by its own mirror image (no step at the join)
    left_ext = np.concatenate([left[-half:], left[::-1][:half]])
    right_ext = np.concatenate([right[:half][::-1], right[:half]])
    phase = (np.arange(fade) + 0.5) / fade
    rise = np.sin(0.5 * np.pi * phase)[:, None].astype(np.float32)
    fall = np.cos(0.5 * np.pi * phase)[:, None].astype(np.float32)
    mixed = left_ext * fall + right_ext * rise
    left[-half:] = mixed[:half]
    right[:half] = mixed[half:]
