"""The fillers edit's cuts drawn on the review page: a strip the width of the round's input (the
figure before it) with each cut as a red block, its filler and times in the block's tooltip; and
one line with the word count of the round's output, which opens to its timed words."""

from __future__ import annotations

import html
import json

from stepedit_core.words.summary import words_line
from stepedit_core.words.timing import words_from_json

STRIP_HEIGHT = 14
MAX_WORDS = 200  # words listed per round (a long-form round lists its first ones)


def cuts_strip(cuts_json: str | None, duration_in_s: float | None) -> str:
    """HTML for one round's cuts, or "" when it made none (or did not run the fillers edit)."""
    cuts = json.loads(cuts_json or "[]")
    if not cuts or not duration_in_s:
        return ""
    blocks = []
    for cut in cuts:
        start = max(0.0, float(cut["start_s"]) / duration_in_s * 100)
        width = max(0.4, (float(cut["end_s"]) - float(cut["start_s"])) / duration_in_s * 100)
        tip = html.escape(f"{cut['word']}: {cut['start_s']:.2f}-{cut['end_s']:.2f} s cut")
        blocks.append(
            f'<rect x="{start:.2f}%" y="0" width="{width:.2f}%" height="{STRIP_HEIGHT}" '
            f'fill="#d33"><title>{tip}</title></rect>'
        )
    listed = ", ".join(
        f"{html.escape(c['word'])} {c['start_s']:.2f}-{c['end_s']:.2f} s" for c in cuts
    )
    return (
        f'<div class="cuts"><svg width="100%" height="{STRIP_HEIGHT}" role="img" '
        f'aria-label="cuts in the input">'
        f'<rect width="100%" height="{STRIP_HEIGHT}" fill="#eee"></rect>{"".join(blocks)}</svg>'
        f'<div class="sub">{len(cuts)} cut{"s" if len(cuts) > 1 else ""} in the input (the '
        f"figure before): {listed}</div></div>"
    )


def words_note(words_json: str | None) -> str:
    """One line under a round's player: how many words its output says (word timings), which
    opens to the words with their start times (fillers in brackets); "" when it has none."""
    line = words_line(words_json)
    if not line:
        return ""
    words = words_from_json(words_json)
    shown = [
        f"{'[' + w.word + ']' if w.filler else w.word} {w.start:.2f}" for w in words[:MAX_WORDS]
    ]
    if len(words) > MAX_WORDS:
        shown.append(f"... and {len(words) - MAX_WORDS} more (words_json has them all)")
    listed = html.escape(", ".join(shown))
    if not listed:
        return f'<div class="sub">words: {html.escape(line)}</div>'
    return (
        f'<details class="sub words"><summary>words: {html.escape(line)}</summary>'
        f"{listed}</details>"
    )
