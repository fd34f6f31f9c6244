"""The fillers edit's cuts drawn on the review page: a strip the width of the round's input (the
figure before it) with each cut as a red block, its filler and times in the block's tooltip; and
one line with the word count of the round's output (its word timings)."""

from __future__ import annotations

import html
import json

from stepedit_core.words.summary import words_line

STRIP_HEIGHT = 14


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
    """One line under a round's player: how many words its output says (word timings), or ""
    when the round has none."""
    line = words_line(words_json)
    return f'<div class="sub">words: {html.escape(line)}</div>' if line else ""
