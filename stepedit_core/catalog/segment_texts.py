"""What each segment of a long clip says: the manifest's `segments` column, or word timings.

The model engine edits a chapter in segments (see engines/stepaudio/segmented.py) and its
instruction quotes each segment's transcript. The `segments` column gives them directly: a JSON
list of {"start", "end", "text"} in seconds of the source (optionally "target_text" for edits that
say something new), in order. The clip is cut in the middle of the gap between two consecutive
entries, the first piece starting at 0 and the last ending at the clip's end. Without the column,
word timings (an ASR model) are mapped onto a split plan made in the pauses: a word belongs to the
piece that holds its middle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from stepedit_core.catalog.segments import Piece
from stepedit_core.words.timing import Word

END_TOLERANCE_S = 0.5  # a `segments` entry may end this far past the clip (rounded times)


class SegmentsError(ValueError):
    """The `segments` cell is not a usable list of timed texts."""


@dataclass(frozen=True)
class SegmentText:
    start: float  # seconds
    end: float
    text: str
    target_text: str | None = None


def parse_segments(cell: str) -> list[SegmentText]:
    """The cell's entries, checked: SegmentsError names the entry and what was expected."""
    try:
        value = json.loads(cell)
    except json.JSONDecodeError as exc:
        raise SegmentsError(f"not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, list) or not value:
        raise SegmentsError("expected a non-empty JSON list")
    found: list[SegmentText] = []
    for number, entry in enumerate(value, start=1):
        found.append(_entry(number, entry))
        if number > 1 and found[-1].start < found[-2].end:
            raise SegmentsError(
                f"entry {number} starts at {found[-1].start:g} s, before entry {number - 1} "
                f"ends ({found[-2].end:g} s); expected entries in order, not overlapping"
            )
    return found


def _entry(number: int, entry: object) -> SegmentText:
    if not isinstance(entry, dict):
        raise SegmentsError(f"entry {number} is {type(entry).__name__}, expected an object")
    start, end, text = entry.get("start"), entry.get("end"), entry.get("text")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (start, end))
    if not numbers or not 0 <= start < end:  # type: ignore[operator]
        raise SegmentsError(
            f"entry {number}: 'start' and 'end' must be seconds with 0 <= start < end, "
            f"got start={start!r}, end={end!r}"
        )
    if not isinstance(text, str) or not text.strip():
        raise SegmentsError(f"entry {number}: 'text' must be a non-empty string, got {text!r}")
    target = entry.get("target_text")
    if target is not None and not isinstance(target, str):
        raise SegmentsError(f"entry {number}: 'target_text' must be a string, got {target!r}")
    return SegmentText(float(start), float(end), text.strip(), target)  # type: ignore[arg-type]


def joined_text(segments: list[SegmentText]) -> str:
    """The whole clip's transcript (the row's `text` when the manifest gives none)."""
    return " ".join(s.text for s in segments)


def pieces_of(segments: list[SegmentText], frames: int, rate: int) -> list[Piece]:
    """Contiguous pieces covering 0..frames, cut in the middle of each gap between entries."""
    last_end = round(segments[-1].end * rate)
    if last_end > frames + round(END_TOLERANCE_S * rate):
        raise SegmentsError(
            f"the last entry ends at {segments[-1].end:g} s, after the clip's end "
            f"({frames / rate:.2f} s)"
        )
    cuts = [
        round(0.5 * (a.end + b.start) * rate) for a, b in zip(segments, segments[1:], strict=False)
    ]
    bounds = [0, *cuts, frames]
    return [Piece(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def texts_from_words(words: list[Word], pieces: list[Piece], rate: int) -> list[str]:
    """Each piece's words in order, joined by spaces ('' for a piece nobody speaks in)."""
    texts: list[list[str]] = [[] for _ in pieces]
    for word in words:
        middle = 0.5 * (word.start + word.end) * rate
        for k, piece in enumerate(pieces):
            if middle < piece.end or k == len(pieces) - 1:
                texts[k].append(word.word.strip())
                break
    return [" ".join(w for w in ws if w) for ws in texts]
