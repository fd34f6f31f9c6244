"""A whole chapter at a glance: a min/max waveform overview as inline SVG, with marks.

One column per `width` slice of the audio (all channels mixed), drawn as a vertical bar from the
slice's lowest to its highest sample, so a 2-hour chapter and a 5-second line take the same few
kilobytes. Marks (seconds) are drawn as labelled vertical lines: where a delivered file was cut
into parts.
"""

from __future__ import annotations

import html

import numpy as np

WIDTH = 800
HEIGHT = 80


def envelope(samples: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """(lowest, highest) sample of each of `columns` equal slices of `samples` (mixed down)."""
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    columns = max(1, min(columns, mono.shape[0]))
    edges = np.linspace(0, mono.shape[0], columns + 1).astype(int)
    low = np.minimum.reduceat(mono, edges[:-1])
    high = np.maximum.reduceat(mono, edges[:-1])
    return low, high


def waveform_svg(
    samples: np.ndarray, rate: int, marks: list[tuple[float, str]], title: str = ""
) -> str:
    """The overview of `samples` with `marks` [(seconds, label), ...] as labelled lines."""
    low, high = envelope(samples, WIDTH)
    middle = HEIGHT / 2
    step = WIDTH / low.shape[0]
    bars = "".join(
        f'<rect x="{i * step:.1f}" y="{middle - hi * middle:.1f}" width="{max(step, 1):.1f}" '
        f'height="{max(0.5, (hi - lo) * middle):.1f}"/>'
        for i, (lo, hi) in enumerate(zip(np.clip(low, -1, 1), np.clip(high, -1, 1), strict=True))
    )
    seconds = samples.shape[0] / rate
    lines = ""
    for at, label in marks:
        x = WIDTH * at / seconds if seconds else 0
        lines += (
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{HEIGHT}" class="mark"/>'
            f'<text x="{x + 2:.1f}" y="10" class="mark">{html.escape(label)}</text>'
        )
    return (
        f'<svg class="waveform" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(title or "waveform overview")}">'
        f'<g class="wave">{bars}</g>{lines}</svg>'
    )
