"""A chapter the model edited in segments, on the review page: the round's waveform overview with
each join between segments marked, and a player per segment.

The players play the round's one FLAC file between the segment's output offsets (a media fragment,
`#t=start,end`), so a chapter of hundreds of segments adds no files to the report.
"""

from __future__ import annotations

import html
import json

from stepedit_core.foundation.audio import Audio
from stepedit_core.report.waveform import waveform_svg


def segment_joins(segments_json: str | None, audio: Audio | None, media: str | None) -> str:
    """HTML for one round's segments, or "" when the round was not segmented."""
    segments = json.loads(segments_json or "[]")
    if not segments or audio is None:
        return ""
    marks = [(float(s["output_start_s"]), f"{s['index'] + 1}") for s in segments[1:]]
    body = waveform_svg(audio.samples, audio.sample_rate, marks, "segment joins")
    for s in segments:
        start, end = float(s["output_start_s"]), float(s["output_end_s"])
        label = f"{s['index'] + 1}. {start:.1f}-{end:.1f} s (source {s['source_start_s']:.1f}-"
        label += f"{s['source_end_s']:.1f} s) {s.get('text') or ''}"
        body += f'<div class="sub">{html.escape(label)}</div>'
        if media:
            src = html.escape(f"{media}#t={start:.3f},{end:.3f}")
            body += f'<audio controls preload="none" src="{src}"></audio>'
    count = len(segments)
    return (
        f'<details class="segments"><summary>{count} segments, {count - 1} joins</summary>'
        f"{body}</details>"
    )
