"""Per-round metric trends as inline SVG: mean line with the 10th-90th percentile band."""

from __future__ import annotations

import html

import numpy as np

WIDTH, HEIGHT = 300, 150
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 22, 26


def round_stats(values_by_round: dict[int, list[float]]) -> list[dict[str, float]]:
    """mean, p10, p90 and count per round, rounds in order (rounds with no values left out)."""
    stats = []
    for k in sorted(values_by_round):
        values = np.asarray([v for v in values_by_round[k] if v is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            stats.append(
                {
                    "round": k,
                    "mean": float(values.mean()),
                    "p10": float(np.percentile(values, 10)),
                    "p90": float(np.percentile(values, 90)),
                    "n": int(values.size),
                }
            )
    return stats


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def trend_svg(metric: str, stats: list[dict[str, float]]) -> str:
    """One small chart; x = round, y = metric. Empty string when there is nothing to draw."""
    if not stats:
        return ""
    low = min(s["p10"] for s in stats)
    high = max(s["p90"] for s in stats)
    if high - low < 1e-9:
        low, high = low - 1.0, high + 1.0
    span_x = WIDTH - LEFT - RIGHT
    span_y = HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (span_x * i / (len(stats) - 1) if len(stats) > 1 else span_x / 2)

    def y(v: float) -> float:
        return TOP + span_y * (high - v) / (high - low)

    band = [(x(i), y(s["p90"])) for i, s in enumerate(stats)]
    band += [(x(i), y(s["p10"])) for i, s in reversed(list(enumerate(stats)))]
    name = html.escape(metric)
    line = " ".join(f"{x(i):.1f},{y(s['mean']):.1f}" for i, s in enumerate(stats))
    parts = [
        f'<svg class="chart" data-metric="{name}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{name} by round">',
        f'<text class="title" x="{LEFT}" y="14">{name}</text>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" '
        f'y2="{HEIGHT - BOTTOM}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{_fmt(high)}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end">'
        f"{_fmt(low)}</text>",
        '<polygon class="band" points="'
        + " ".join(f"{px:.1f},{py:.1f}" for px, py in band)
        + '"/>',
        f'<polyline class="mean" points="{line}"/>',
    ]
    for i, s in enumerate(stats):
        tip = f"round {s['round']}: mean {_fmt(s['mean'])}, p10 {_fmt(s['p10'])}, "
        tip += f"p90 {_fmt(s['p90'])}, {s['n']} clips"
        parts.append(
            f'<circle cx="{x(i):.1f}" cy="{y(s["mean"]):.1f}" r="3"><title>{tip}</title></circle>'
        )
        parts.append(
            f'<text class="tick" x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
            f"{'source' if s['round'] < 0 else 'r' + str(s['round'])}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
