"""Rating rounds on the review page: five buttons under each round, and a bar to export them.

The page works from `file://` with no server: `assets/ratings.js` keeps a reviewer's ratings in
the browser's localStorage (per run) and downloads them as JSON or CSV, in the form that
`stepedit dataset import-ratings RUN FILE` reads (stepedit_core/dataset/ratings.py). The
source is rated as iteration 0 when the run made no round 0 of its own (a clone).
"""

from __future__ import annotations

from stepedit_core.report.escape import html_text as _e

RATINGS = range(1, 6)


def rating_widget(clip_id: str, row_index: int, iteration: int, audio_sha256: str | None) -> str:
    buttons = "".join(
        f'<button type="button" data-rating="{n}" aria-pressed="false" '
        f'title="rate {n} of 5">{n}</button>'
        for n in RATINGS
    )
    return (
        f'<div class="rating" data-clip="{_e(clip_id)}" data-row="{row_index}" '
        f'data-iteration="{iteration}" data-sha="{_e(audio_sha256)}">'
        f'<span class="sub">rate</span>{buttons}</div>'
    )


def ratings_bar(run_id: str, run_digest: str | None) -> str:
    """The export bar (hidden by the script until the page has something to rate). The run
    digest keeps two runs of the same id (under different roots) from sharing ratings."""
    return (
        f'<div id="ratings-bar" class="ratings-bar sub" data-run="{_e(run_id)}" '
        f'data-digest="{_e(run_digest)}">'
        '<label>reviewer <input id="ratings-rater" type="text" size="12"></label> '
        '<span id="ratings-count">0 rounds rated</span> '
        '<button type="button" id="ratings-export-json">download ratings (JSON)</button> '
        '<button type="button" id="ratings-export-csv">download ratings (CSV)</button> '
        '<button type="button" id="ratings-clear">clear</button> '
        "<span>import with <code>stepedit dataset import-ratings RUN FILE</code></span></div>"
    )
