"""The review page's margin section: for a run that made a margin set (RUN/dataset/
sft.parquet), one histogram per attribute of the pairs' margins 1-10, kept pairs shaded apart
from the dropped ones. Inline SVG, like the metric trends."""

from __future__ import annotations

import html
import json
from collections import Counter

from stepedit_core.dataset.layout import SET_METADATA
from stepedit_core.foundation.store import RunStore

WIDTH, HEIGHT = 300, 150
LEFT, RIGHT, TOP, BOTTOM = 36, 10, 22, 26
MARGINS = range(1, 11)


def margin_histogram_svg(attribute: str, margins: list[int], min_margin: float) -> str:
    """Bars of pair counts per margin 1..10; bars at or over `min_margin` are `kept`."""
    counts = Counter(margins)
    top = max(counts.values(), default=0) or 1
    slot = (WIDTH - LEFT - RIGHT) / len(MARGINS)
    span_y = HEIGHT - TOP - BOTTOM
    name = html.escape(attribute)
    kept = sum(n for m, n in counts.items() if m >= min_margin)
    parts = [
        f'<svg class="chart margins" data-attribute="{name}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="margins of {name}">',
        f'<text class="title" x="{LEFT}" y="14">{name}: {kept} of {len(margins)} kept</text>',
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{top}</text>',
    ]
    for i, margin in enumerate(MARGINS):
        n = counts.get(margin, 0)
        height = span_y * n / top
        x = LEFT + i * slot
        kind = "kept" if margin >= min_margin else "dropped"
        parts.append(
            f'<rect class="{kind}" data-margin="{margin}" data-count="{n}" x="{x + 2:.1f}" '
            f'y="{HEIGHT - BOTTOM - height:.1f}" width="{slot - 4:.1f}" height="{height:.1f}">'
            f"<title>margin {margin}: {n} pair(s), {kind}</title></rect>"
        )
        parts.append(
            f'<text class="tick" x="{x + slot / 2:.1f}" y="{HEIGHT - 8}" '
            f'text-anchor="middle">{margin}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def margin_section(store: RunStore) -> str:
    """The section's HTML, or "" when the run made no margin set."""
    path = store.margin_set
    if not store.exists(path):
        return ""
    settings = json.loads(store.read_metadata(path).get(SET_METADATA, "{}"))
    min_margin = float(settings.get("min_margin", 6))
    rows = store.read_table(path, columns=["attribute", "margin"]).to_pylist()
    attributes = settings.get("attributes") or sorted({r["attribute"] for r in rows})
    charts = "".join(
        margin_histogram_svg(
            attribute,
            [r["margin"] for r in rows if r["attribute"] == attribute and r["margin"] is not None],
            min_margin,
        )
        for attribute in attributes
    )
    return (
        f'<h2>Margin set</h2><div class="sub">pairs kept at margin &ge; {min_margin:g} '
        f'(<a href="../dataset/README.md">data card</a>, '
        f'<a href="../dataset/sft.parquet">sft.parquet</a>)</div>'
        f'<div class="charts">{charts}</div>'
    )
