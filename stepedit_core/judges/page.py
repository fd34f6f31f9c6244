"""The review page's judged-accuracy section: a chart per task and language (accuracy, or the
paralinguistic mean score, by iteration), with the paper's published figures drawn beside ours
where the task and language match, and the table of the same numbers."""

from __future__ import annotations

import html

from stepedit_core.foundation.store import RunStore
from stepedit_core.judges.accuracy import by_task

# Step-Audio-EditX technical report (arXiv 2511.03601, v1), Gemini 2.5 Pro as judge, by iteration
PAPER = {
    ("emotion", "zh"): [0.570, 0.717, 0.745, 0.777],
    ("emotion", "en"): [0.499, 0.605, 0.615, 0.637],
    ("style", "zh"): [0.416, 0.621, 0.658, 0.692],
    ("style", "en"): [0.503, 0.624, 0.643, 0.631],
}
PAPER_PARALINGUISTIC = [1.91, 2.89]  # mean score, iterations 0 and 1, both languages
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 300, 160, 40, 26, 22
COLORS = {"ours": ("#1f6fd1", "none"), "paper": ("#9a9a9a", "4 3")}  # stroke, dashes


def accuracy_section(store: RunStore) -> str:
    """HTML for RUN/eval/accuracy.parquet; empty when the run was never judged."""
    path = store.eval_file("accuracy.parquet")
    if not store.exists(path):
        return ""
    rows = store.read_table(path).to_pylist()
    charts, lines = [], []
    for (task, language), cells in by_task(rows).items():
        scored = task == "paralinguistic"
        ours = {k: c["mean_score"] if scored else c["accuracy"] for k, c in cells.items()}
        paper = PAPER_PARALINGUISTIC if scored else PAPER.get((task, language), [])
        charts.append(_chart(f"{task} ({language or '-'})", ours, paper, scored))
        for k, cell in sorted(cells.items()):
            value = ours[k]
            shown = "-" if value is None else (f"{value:.2f}" if scored else f"{100 * value:.1f}%")
            published = paper[k] if k < len(paper) else None
            pub = (
                ""
                if published is None
                else (f"{published:.2f}" if scored else f"{100 * published:.1f}%")
            )
            lines.append(
                f"<tr><td>{html.escape(task)}</td><td>{html.escape(language or '-')}</td>"
                f"<td>{k}</td><td>{cell['clips']}</td><td>{shown}</td><td>{pub}</td>"
                f"<td>{cell['out_of_label']}</td><td>{cell['judge_failures']}</td></tr>"
            )
    table = (
        '<table class="small judged"><tr><th>task</th><th>language</th><th>iteration</th>'
        "<th>clips</th><th>ours</th><th>paper</th><th>out of label</th>"
        "<th>judge failures</th></tr>" + "".join(lines) + "</table>"
    )
    return (
        "<h2>Judged accuracy by iteration</h2>"
        '<div class="sub">labels weighted equally; answers outside the label set count as '
        "wrong; the paper's figures (dashed) where task and language match</div>"
        f'<div class="charts">{"".join(charts)}</div>{table}'
    )


def _chart(title: str, ours: dict[int, float | None], paper: list[float], scored: bool) -> str:
    low, high = (1.0, 3.0) if scored else (0.0, 1.0)
    xs = sorted(set(ours) | set(range(len(paper))))
    span_x, span_y = WIDTH - LEFT - 12, HEIGHT - TOP - BOTTOM

    def x(k: int) -> float:
        return LEFT + (span_x * xs.index(k) / (len(xs) - 1) if len(xs) > 1 else span_x / 2)

    def y(v: float) -> float:
        return TOP + span_y * (high - v) / (high - low)

    def line(points: list[tuple[int, float]], cls: str) -> str:
        color, dash = COLORS[cls]
        coords = " ".join(f"{x(k):.1f},{y(v):.1f}" for k, v in points)
        dots = "".join(
            f'<circle class="{cls}" cx="{x(k):.1f}" cy="{y(v):.1f}" r="3" '
            f'style="fill:{color}"><title>{cls} iteration {k}: {v:.3g}</title></circle>'
            for k, v in points
        )
        style = f"fill:none;stroke:{color};stroke-width:2;stroke-dasharray:{dash}"
        return f'<polyline class="{cls}" points="{coords}" style="{style}"/>{dots}'

    mine = [(k, v) for k, v in sorted(ours.items()) if v is not None]
    theirs = list(enumerate(paper))
    name = html.escape(title)
    parts = [
        f'<svg class="chart" data-metric="judged {name}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{name} by iteration">',
        f'<text class="title" x="{LEFT}" y="14">{name}</text>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
        f'<text class="tick" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{high:g}</text>',
        f'<text class="tick" x="{LEFT - 4}" y="{HEIGHT - BOTTOM}" text-anchor="end">{low:g}</text>',
    ]
    if theirs:
        parts.append(line(theirs, "paper"))
        parts.append(
            f'<text class="tick" x="{WIDTH - 12}" y="14" text-anchor="end">'
            f'<tspan style="fill:{COLORS["ours"][0]}">ours</tspan> '
            f'<tspan style="fill:{COLORS["paper"][0]}">- - paper</tspan></text>'
        )
    parts.append(line(mine, "ours"))
    for k in xs:
        parts.append(
            f'<text class="tick" x="{x(k):.1f}" y="{HEIGHT - 8}" text-anchor="middle">i{k}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
