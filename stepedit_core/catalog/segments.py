"""Split plans for long audio: contiguous pieces that cover a file, cut only inside pauses.

Used for a chapter that is longer than the model engine reads in one call (segments edited one
by one, then stitched) and for a delivered file longer than a profile allows (ACX: 120 minutes,
delivered as numbered parts). Each cut is made in the longest pause whose middle lies in the last
SEARCH_SHARE of the allowed length (so pieces stay near the limit and a short breath is not
preferred over a real pause), at the pause's middle; when that stretch has no pause, the longest
pause anywhere in the allowed length is used. A piece is never cut inside speech: when no pause
fits, `NoPause` names where.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import pairwise

DEFAULT_SEGMENT_S = 25.0  # under the ~30 s the model reads well per call, far under its token cap
SEARCH_SHARE = 0.5
MIN_PAUSE_S = 0.1  # a shorter gap between speech spans is not a pause to cut in


class NoPause(ValueError):
    """No pause to cut in before a piece reaches its limit."""


@dataclass(frozen=True)
class Piece:
    start: int  # frames
    end: int

    def seconds(self, rate: int) -> dict[str, float]:
        return {"start_s": round(self.start / rate, 3), "end_s": round(self.end / rate, 3)}


def pauses(spans: list[tuple[int, int]], frames: int, rate: int) -> list[tuple[int, int]]:
    """Gaps between speech spans (not the head or the tail) at least MIN_PAUSE_S long."""
    shortest = round(MIN_PAUSE_S * rate)
    inner = [(end, start) for (_, end), (start, _) in pairwise(spans)]
    return [(a, b) for a, b in inner if b - a >= shortest and a > 0 and b < frames]


def plan(frames: int, rate: int, spans: list[tuple[int, int]], max_s: float) -> list[Piece]:
    """Pieces of at most `max_s` seconds covering frames 0..`frames`, cut in pauses."""
    limit = max(1, round(max_s * rate))
    gaps = pauses(spans, frames, rate)
    pieces: list[Piece] = []
    start = 0
    while frames - start > limit:
        stop = start + limit
        near = start + round((1 - SEARCH_SHARE) * limit)
        cut = _cut(gaps, near, stop, start) or _cut(gaps, start + 1, stop, start)
        if cut is None:
            raise NoPause(
                f"no pause between {start / rate:.1f} s and {stop / rate:.1f} s to cut a piece of "
                f"at most {max_s:g} s in (speech runs on)"
            )
        pieces.append(Piece(start, cut))
        start = cut
    pieces.append(Piece(start, frames))
    return pieces


def _cut(gaps: list[tuple[int, int]], low: int, high: int, start: int) -> int | None:
    """Middle of the longest pause whose middle lies in low..high, moved inside high."""
    found = [(b - a, a, b) for a, b in gaps if low <= (a + b) // 2 <= high and b > start]
    if not found:
        return None
    _, a, b = max(found)
    return min((a + b) // 2, high)


def plan_json(pieces: list[Piece], rate: int) -> str:
    return json.dumps([p.seconds(rate) for p in pieces])


def plan_file(uri: str, max_s: float = DEFAULT_SEGMENT_S) -> tuple[list[Piece], int]:
    """The split plan of one audio file (silero-vad speech) and its sample rate."""
    from stepedit_core.foundation.audio import load
    from stepedit_core.quality import qc

    audio, _ = load(uri)
    spans = qc.speech_spans(audio.samples, audio.sample_rate)
    return plan(audio.frames, audio.sample_rate, spans, max_s), audio.sample_rate
