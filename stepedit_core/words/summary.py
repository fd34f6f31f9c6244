"""A round's words and cuts in one short line each, for `stepedit audit` and the review page."""

from __future__ import annotations

import json

from stepedit_core.words.timing import words_from_json

MAX_LISTED_CUTS = 8  # a longer cut list ends in "... and N more" (the record keeps them all)


def words_line(words_json: str | None) -> str | None:
    """ "14 words (2 fillers), 0.31-4.92 s", or None when the round has no word timings."""
    if words_json is None:
        return None
    words = words_from_json(words_json)
    if not words:
        return "no words found"
    fillers = sum(w.filler for w in words)
    spoken = len(words) - fillers
    text = f"{spoken} word{'s' if spoken != 1 else ''}"
    if fillers:
        text += f" ({fillers} filler{'s' if fillers != 1 else ''} kept)"
    return f"{text}, {words[0].start:.2f}-{max(w.end for w in words):.2f} s"


def cuts_line(cuts_json: str | None) -> str | None:
    """ "2 cuts: um 1.20-1.61 s, uh mm 3.05-3.50 s", or None when no fillers edit ran."""
    if cuts_json is None:
        return None
    cuts = json.loads(cuts_json)
    if not cuts:
        return "no cuts"
    listed = [f"{c['word']} {c['start_s']:.2f}-{c['end_s']:.2f} s" for c in cuts]
    if len(listed) > MAX_LISTED_CUTS:
        listed = [*listed[:MAX_LISTED_CUTS], f"... and {len(listed) - MAX_LISTED_CUTS} more"]
    return f"{len(cuts)} cut{'s' if len(cuts) != 1 else ''}: {', '.join(listed)}"
