"""VAD: find speech with silero-vad (stepedit_core.signal.vad), then shorten every pause longer
than a threshold to it.

The cut is made on the original samples at their own rate, the same cut for every channel. A
shortened pause keeps its two edges (the room tone right after and right before speech, where soft
consonants and breaths live) joined by a short equal-power crossfade, so no digital silence is
ever inserted.

Leading and trailing silence are not held to the pause limit but to a delivery window: by default
up to 0.75 s is kept before the first word and up to 1.5 s after the last (the part next to
speech), inside ACX's 0.5-1 s head and 1-5 s tail of room tone, so `vad` does not take away the
room tone an audiobook must start and end with. Shorter heads and tails are left as they are
(vad never adds audio; `loudness=acx` fills them with room tone). `shorten_pauses(head_s=...,
tail_s=...)` takes another window.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from stepedit_core.quality.delivery import PROFILES
from stepedit_core.signal.gain import crossfade

__all__ = ["shorten_pauses"]

CROSSFADE_S = 0.01
# the most leading / trailing silence kept: the ACX mastering targets, inside its window
HEAD_KEEP_S = float(PROFILES["acx"].head_target_s or 0.75)
TAIL_KEEP_S = float(PROFILES["acx"].tail_target_s or 1.5)


def shorten_pauses(
    samples: np.ndarray,
    sample_rate: int,
    speech: list[tuple[int, int]],
    max_pause_s: float,
    crossfade_s: float = CROSSFADE_S,
    head_s: float = HEAD_KEEP_S,
    tail_s: float = TAIL_KEEP_S,
) -> np.ndarray:
    """Cut every gap between `speech` spans that is longer than `max_pause_s` down to exactly
    that length, and leading / trailing silence to at most `head_s` / `tail_s` (the part next to
    speech is kept). Speech frames are copied untouched."""
    frames = samples.shape[0]
    keep = max(1, round(max_pause_s * sample_rate))
    xfade = max(1, round(crossfade_s * sample_rate))
    if not speech:
        return samples
    first, last = speech[0][0], speech[-1][1]
    start = max(0, first - round(head_s * sample_rate))  # room tone next to the first word
    stop = min(frames, last + round(tail_s * sample_rate))  # room tone after the last word
    pieces: list[np.ndarray] = []
    cursor = start
    for (_, gap_start), (gap_end, _) in pairwise(speech):
        length = gap_end - gap_start
        if length <= keep:
            continue
        fade = min(xfade, keep // 2, length - keep)
        head = gap_start + (keep + fade) // 2  # end of the pause's first edge (fade included)
        tail = gap_end - (keep + fade - (keep + fade) // 2)  # start of its last edge
        pieces.append(samples[cursor : head - fade])
        if fade > 0:
            pieces.append(crossfade(samples[head - fade : head], samples[tail : tail + fade]))
        cursor = tail + fade
    pieces.append(samples[cursor:stop])
    return np.ascontiguousarray(np.concatenate(pieces, axis=0), dtype=np.float32)
