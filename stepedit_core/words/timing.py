"""A word with its time span, and the JSON list the round record keeps (`words_json`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Word:
    """One spoken word in seconds from the start of the audio it was found in.

    `filler` marks a word of the filler set (`um`, `uh`, ...) or a voiced stretch that no word
    of the text explains (word `<voiced>`). `confidence` is the backend's posterior in 0..1.
    """

    word: str
    start: float
    end: float
    confidence: float | None = None
    filler: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


def words_json(words: list[Word]) -> str:
    """The record's form: a list of {"word", "start", "end", "confidence", "filler"}."""
    rows = []
    for w in words:
        row = asdict(w)
        row["start"], row["end"] = round(w.start, 3), round(w.end, 3)
        if w.confidence is not None:
            row["confidence"] = round(w.confidence, 3)
        rows.append(row)
    return json.dumps(rows)


def words_from_json(text: str | None) -> list[Word]:
    return [Word(**row) for row in json.loads(text or "[]")]


@dataclass
class OutputWords:
    """The words of a round's output, from the word-timing stage or the fillers edit (which
    times its own output); `note` says why there are none when the output could not be timed."""

    words: list[Word] | None = None
    backend: str | None = None  # which backend found them (pocketsphinx, faster-whisper)
    transcript: str | None = None  # what an ASR heard (the WER gate reuses it)
    note: str | None = None

    def to_json(self) -> str | None:
        """The record's `words_json` (None when the output was not timed)."""
        return None if self.words is None else words_json(self.words)
