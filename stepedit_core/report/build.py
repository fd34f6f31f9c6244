"""Build RUN/report/: a static review page that opens from disk or object storage, no server.

    report/index.html          summary, counts, QC pass rates, metric trends, page 1 + failures
    report/page-0002.html ...  the other clips, `page_size` per page
    report/media/<row>-<clip>/ source.flac, round-<k>.flac, and a spectrogram PNG of each

A clip delivered in another format or in parts (delivered_files in the output manifest) also
gets a waveform overview of what was delivered, the cuts between parts marked, a player per
delivered file (linked from ../audio/, so those players need the run folder, not only report/)
and the delivered files' QC verdict.

Every link is relative, so the folder works wherever it is copied whole (local disk, an S3
static website or bucket behind a CDN, `aws s3 cp --recursive` to a laptop). Audio is kept as
files next to the page rather than data URIs: pages stay small at 100k clips and a browser
fetches only what is played (`preload="none"`). A round's file is that record's exact FLAC
bytes, so its sha256 is the record's output_sha256.

QC is shown when records carry `qc_pass` (bool) and optionally `qc_reasons` (text) and
`qc_profile`; every other `qc_*` column is shown with the round's metrics.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.catalog.records import round_flac
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.store import RunStore
from stepedit_core.judges.page import accuracy_section
from stepedit_core.quality.qc import basic_metrics
from stepedit_core.quality.qc_result import QcResult
from stepedit_core.report.charts import round_stats, trend_svg
from stepedit_core.report.cuts import cuts_strip, words_note
from stepedit_core.report.escape import html_text as _e
from stepedit_core.report.margins import margin_section
from stepedit_core.report.ratings import rating_widget, ratings_bar
from stepedit_core.report.segment_joins import segment_joins
from stepedit_core.report.spectrogram import spectrogram_png
from stepedit_core.report.waveform import waveform_svg

QC_PASS = "qc_pass"
QC_REASONS = "qc_reasons"
QC_PROFILE = "qc_profile"
QC_JSON = "qc_json"  # {"metrics": {...}, "notes": {...}}: its numeric metrics are charted too
SOURCE_ROUND = -1  # the source clip, drawn before round 0/1 in charts
FAILURES_ON_INDEX = 2000  # more failing clips than this go to failures-NNNN.html pages
NOT_METRICS = frozenset(
    {"row_index", "iteration", "seed", "sample_rate", "channels", "duration_in_s", QC_PASS}
)
CAPTION_METRICS = ("duration_s", "rms_dbfs", "peak_dbfs", "wer")


@dataclass
class RoundView:
    iteration: int
    status: str | None
    edit: str | None = None
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    qc_pass: bool | None = None
    qc_reasons: str | None = None
    audio: str | None = None  # media path relative to report/
    image: str | None = None
    cuts: str = ""  # the fillers edit's cuts on the input's timeline (report/cuts.py)
    segments: str = ""  # a segmented chapter's joins and players (report/segment_joins.py)
    sha256: str | None = None  # of the round's audio (the source: of its file)


@dataclass
class ClipView:
    row_index: int
    clip_id: str
    status: str
    error_code: str | None
    error: str | None
    text: str | None
    audio_uri: str | None
    edit: str | None = None
    rounds: dict[int, RoundView] = field(default_factory=dict)
    # delivered in another format or in parts: the manifest's files, and the overview of them
    delivered: list[dict[str, Any]] | None = None
    delivered_qc: str | None = None
    delivered_reasons: str | None = None
    overview: str | None = None

    @property
    def final(self) -> RoundView | None:
        done = [k for k in self.rounds if k != SOURCE_ROUND]
        return self.rounds[max(done)] if done else None

    @property
    def qc(self) -> str:
        final = self.final
        if final is None or final.qc_pass is None:
            return "none"
        return "pass" if final.qc_pass else "fail"

    @property
    def failing(self) -> bool:
        return self.status != "ok" or self.qc == "fail"


def _media_dir(clip: ClipView) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", clip.clip_id)[:60].strip("._") or "clip"
    return f"media/{clip.row_index:08d}-{stem}"


class ReportBuilder:
    def __init__(self, store: RunStore, media_rows: set[int] | None = None) -> None:
        self.store = store
        self.media_rows = media_rows  # rows whose audio and spectrograms are written; None: all
        self.values: dict[str, dict[int, list[float]]] = {}
        self.qc_counts: dict[int, list[int]] = {}  # round -> [passed, checked]
        self.profiles: set[str] = set()

    def wants_media(self, clip: ClipView) -> bool:
        return self.media_rows is None or clip.row_index in self.media_rows

    def qc_failing_rows(self) -> set[int]:
        """Rows whose last round fails QC, from two small columns (no audio read)."""
        last: dict[int, tuple[int, bool | None]] = {}
        for part in self.store.list(self.store.iterations_dir):
            with self.store.fs.open(part, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                if QC_PASS not in parquet.schema_arrow.names:
                    continue
                table = parquet.read(columns=["row_index", "iteration", QC_PASS])
            for row, k, verdict in zip(*(c.to_pylist() for c in table.columns), strict=True):
                if row not in last or k > last[row][0]:
                    last[row] = (k, verdict)
        return {row for row, (_, verdict) in last.items() if verdict is False}

    def path(self, rel: str) -> str:
        return self.store.report_file(rel)

    def load_clips(self) -> dict[int, ClipView]:
        table = self.store.read_table(self.store.manifest)
        names = set(table.column_names)
        clips = {}
        for row_index, row in enumerate(table.to_pylist()):
            clips[row_index] = ClipView(
                row_index=row_index,
                clip_id=str(row.get("clip_id") or f"row-{row_index}"),
                status=row.get("status") or "failed",
                error_code=row.get("error_code"),
                error=row.get("error"),
                text=row.get("text") if "text" in names else None,
                audio_uri=row.get("audio_uri"),
            )
            if row.get("delivered_files"):
                clip = clips[row_index]
                clip.delivered = json.loads(row["delivered_files"])
                clip.delivered_qc, clip.delivered_reasons = (
                    row.get("qc_status"),
                    row.get("qc_reasons"),
                )
        return clips

    def add_records(self, clips: dict[int, ClipView]) -> None:
        """One row group at a time: memory holds one row group's audio at most, never the run's."""
        for part in self.store.list(self.store.iterations_dir):
            with self.store.fs.open(part, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                metrics = [
                    f.name
                    for f in parquet.schema_arrow
                    if f.name not in NOT_METRICS
                    and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))
                ]
                qc_columns = [
                    n
                    for n in parquet.schema_arrow.names
                    if n.startswith("qc_")
                    and n not in (QC_PASS, QC_REASONS, QC_JSON)
                    and n not in metrics
                ]
                # the audio column is read only for row groups holding a clip that gets media:
                # with media on index.html alone, most of a large run's audio is never read
                names = [n for n in parquet.schema_arrow.names if n != "audio_flac"]
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group, columns=names)
                    rows = table.column("row_index").to_pylist()
                    if "audio_flac" in parquet.schema_arrow.names and any(
                        r in clips and self.wants_media(clips[r]) for r in rows
                    ):
                        audio = parquet.read_row_group(group, columns=["audio_flac"])
                        table = table.append_column("audio_flac", audio.column("audio_flac"))
                    for record in table.to_pylist():
                        clip = clips.get(record["row_index"])
                        if clip is not None:
                            self._add_round(clip, record, metrics, qc_columns)

    def _add_round(
        self, clip: ClipView, record: dict, metrics: list[str], qc_columns: list[str]
    ) -> None:
        k = int(record["iteration"])
        view = RoundView(
            iteration=k,
            status=record.get("status"),
            edit=record.get("edit"),
            error=record.get("error"),
            metrics={m: record.get(m) for m in metrics + qc_columns if record.get(m) is not None},
            qc_pass=record.get(QC_PASS),
            qc_reasons=record.get(QC_REASONS),
            cuts=cuts_strip(record.get("cuts_json"), record.get("duration_in_s"))
            + words_note(record.get("words_json")),
            sha256=record.get("output_sha256"),
        )
        clip.edit = clip.edit or view.edit
        for m in metrics:
            if record.get(m) is not None:
                self.values.setdefault(m, {}).setdefault(k, []).append(float(record[m]))
        for m, value in QcResult.parse(record.get(QC_JSON)).numeric().items():
            if m not in view.metrics:
                view.metrics[m] = value
                self.values.setdefault(m, {}).setdefault(k, []).append(value)
        if view.qc_pass is not None:
            counts = self.qc_counts.setdefault(k, [0, 0])
            counts[0] += int(bool(view.qc_pass))
            counts[1] += 1
            if record.get(QC_PROFILE):
                self.profiles.add(str(record[QC_PROFILE]))
        flac = round_flac(record, self.store.run_uri) if self.wants_media(clip) else None
        if flac:
            view.audio, view.image = self._write_media(clip, f"round-{k}", flac)
            if record.get("segments_json"):
                decoded = audio_io.decode(flac)
                view.segments = segment_joins(record["segments_json"], decoded, view.audio)
        clip.rounds[k] = view

    def add_sources(self, clips: dict[int, ClipView]) -> None:
        """The source of every clip that has rounds: re-encoded to FLAC so any browser plays
        it whatever its format; an unreachable source is shown as such, not fatal."""
        for clip in clips.values():
            if not clip.rounds or not clip.audio_uri:
                continue
            view = RoundView(iteration=SOURCE_ROUND, status="source")
            try:
                source, data = audio_io.load(clip.audio_uri)
            except ItemFailure as exc:
                view.status, view.error = "unavailable", str(exc)
                clip.rounds[SOURCE_ROUND] = view
                continue
            view.metrics = basic_metrics(source)
            view.sha256 = audio_io.sha256_bytes(data)
            for m, v in view.metrics.items():
                if v is not None and m in self.values:
                    self.values[m].setdefault(SOURCE_ROUND, []).append(float(v))
            if self.wants_media(clip):
                flac = audio_io.encode_flac(source)
                view.audio, view.image = self._write_media(clip, "source", flac)
            clip.rounds[SOURCE_ROUND] = view

    def add_delivered(self, clips: dict[int, ClipView]) -> None:
        """A waveform overview of each clip delivered in another format or in parts, the cuts
        between parts marked (the files themselves are played from RUN/audio/)."""
        for clip in clips.values():
            if not clip.delivered or not self.wants_media(clip):
                continue
            try:
                parts = [
                    audio_io.load(self.store.delivered_file(f["uri"]))[0] for f in clip.delivered
                ]
            except ItemFailure:  # a delivered file gone or unreadable: verify reports it
                continue
            samples = np.concatenate([p.samples.mean(axis=1) for p in parts])
            marks, at = [], 0.0
            for number, part in enumerate(parts[:-1], 2):
                at += part.duration
                marks.append((at, f"part {number}"))
            clip.overview = waveform_svg(samples, parts[0].sample_rate, marks, clip.clip_id)

    def _write_media(self, clip: ClipView, name: str, flac: bytes) -> tuple[str, str]:
        base = f"{_media_dir(clip)}/{name}"
        self.store.write_bytes(self.path(base + ".flac"), flac)
        try:
            image = spectrogram_png(audio_io.decode(flac))
        except ItemFailure:
            return base + ".flac", ""
        self.store.write_bytes(self.path(base + ".png"), image)
        return base + ".flac", base + ".png"


# ------------------------------------------------------------------ HTML


def _asset(name: str) -> str:
    return resources.files("stepedit_core.report").joinpath("assets", name).read_text()


def _round_label(k: int) -> str:
    return "source" if k == SOURCE_ROUND else f"round {k}"


def _rating(clip: ClipView, view: RoundView) -> str:
    """Rating buttons for a round with audio (the source counts as iteration 0 unless the run
    made a round 0 itself); only where the page has its player."""
    if view.status not in ("ok", "source") or not view.audio:
        return ""
    iteration = view.iteration
    if iteration == SOURCE_ROUND:
        if 0 in clip.rounds:
            return ""
        iteration = 0
    return rating_widget(clip.clip_id, clip.row_index, iteration, view.sha256)


def _figure(view: RoundView, rating: str = "") -> str:
    caption = [_round_label(view.iteration)]
    for m in CAPTION_METRICS:
        if view.metrics.get(m) is not None:
            unit = " s" if m == "duration_s" else " dB" if m.endswith("dbfs") else ""
            caption.append(f"{m.split('_')[0]} {view.metrics[m]:.4g}{unit}")
    extra = ""
    if view.qc_pass is not None:
        verdict = "pass" if view.qc_pass else "fail"
        extra += f' <span class="badge {verdict}">QC {verdict}</span>'
    if view.status not in ("ok", "source"):
        extra += f' <span class="badge failed">{_e(view.status)}</span>'
    title = "; ".join(f"{k}={v}" for k, v in view.metrics.items())
    body = f'<figcaption title="{_e(title)}">{_e(" · ".join(caption))}{extra}</figcaption>'
    if view.image:
        alt = f"spectrogram, {_round_label(view.iteration)}"
        body += f'<img src="{_e(view.image)}" alt="{alt}" loading="lazy">'
    if view.audio:
        body += f'<audio controls preload="none" src="{_e(view.audio)}"></audio>'
    body += view.cuts + view.segments
    if view.error:
        body += f'<div class="reason">{_e(view.error)}</div>'
    return f"<figure>{body}{rating}</figure>"


def _clip_row(clip: ClipView) -> str:
    search = " ".join(
        str(v).lower()
        for v in (clip.clip_id, clip.text, clip.error_code, clip.error, clip.edit)
        if v
    )
    final = clip.final
    badges = f'<span class="badge {_e(clip.status)}">{_e(clip.status)}</span>'
    badges += f'<span class="badge {clip.qc}">QC {clip.qc}</span>'
    reasons = ""
    if clip.error_code:
        reasons += f'<div class="reason">{_e(clip.error_code)}: {_e(clip.error)}</div>'
    if final is not None and final.qc_reasons:
        reasons += f'<div class="reason">{_e(final.qc_reasons)}</div>'
    figures = "".join(
        _figure(clip.rounds[k], _rating(clip, clip.rounds[k])) for k in sorted(clip.rounds)
    )
    figures += _delivered(clip)
    return (
        f'<tr data-status="{_e(clip.status)}" data-qc="{clip.qc}" data-search="{_e(search)}">'
        f'<td><b>{_e(clip.clip_id)}</b><div class="sub">row {clip.row_index}'
        f"{' · ' + _e(clip.edit) if clip.edit else ''}</div>"
        f'<div class="sub">{_e(clip.text or "")}</div></td>'
        f"<td>{badges}{reasons}</td>"
        f'<td><div class="rounds">{figures}</div></td></tr>'
    )


def _delivered(clip: ClipView) -> str:
    """The delivered files: overview with the cuts, a player per file, the delivered QC."""
    if not clip.delivered:
        return ""
    verdict = ""
    if clip.delivered_qc:
        verdict = f' <span class="badge {_e(clip.delivered_qc)}">QC {_e(clip.delivered_qc)}</span>'
    body = f"<figcaption>delivered ({len(clip.delivered)} file(s)){verdict}</figcaption>"
    body += clip.overview or ""
    for number, entry in enumerate(clip.delivered, 1):
        name = posixpath.basename(entry["uri"])
        span = f"{entry['start_s']:.1f}-{entry['end_s']:.1f} s"
        body += (
            f'<div class="sub">{number}. {_e(name)} ({span})</div>'
            f'<audio controls preload="none" src="../audio/{_e(name)}"></audio>'
        )
    if clip.delivered_reasons:
        body += f'<div class="reason">{_e(clip.delivered_reasons)}</div>'
    return f'<figure class="delivered">{body}</figure>'


def _table(clips: list[ClipView]) -> str:
    filters = (
        '<div class="filters"><input id="filter-text" type="search" '
        'placeholder="filter: clip id, text, error, edit">'
        '<select id="filter-status"><option value="all">all clips</option>'
        '<option value="ok">ok</option><option value="failed">failed</option>'
        '<option value="qc-fail">QC fail</option><option value="qc-pass">QC pass</option>'
        '</select><span id="filter-count" class="sub"></span></div>'
    )
    rows = "".join(_clip_row(c) for c in clips)
    return (
        filters + '<table class="clips"><thead><tr><th>clip</th><th>verdict</th>'
        f"<th>source and rounds</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _page(title: str, header: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}'
        f"</title><style>{_asset('report.css')}</style></head><body><header>{header}</header>"
        f"<main>{body}</main><script>{_asset('report.js')}</script>"
        f"<script>{_asset('ratings.js')}</script></body></html>\n"
    )


def _nav(pages: list[str], current: str) -> str:
    links = []
    for number, name in enumerate(pages, start=1):
        if name == current:
            links.append(f"<b>{number}</b>")
        else:
            links.append(f'<a href="{name}">{number}</a>')
    return f'<nav class="pages">pages: {" ".join(links)}</nav>'


def _summary(run: dict, clips: list[ClipView], qc_counts: dict, profiles: set[str]) -> str:
    counts = run.get("counts") or {}
    ok = sum(1 for c in clips if c.status == "ok")
    qc_checked = [c for c in clips if c.qc != "none"]
    cards = [
        ("clips", len(clips)),
        ("ok", ok),
        ("failed", len(clips) - ok),
        ("refused at plan", counts.get("refused_at_plan", "-")),
        ("rounds", (run.get("parameters") or {}).get("iterations", "-")),
    ]
    if qc_checked:
        passed = sum(1 for c in qc_checked if c.qc == "pass")
        cards.append(("QC pass (delivered)", f"{100.0 * passed / len(qc_checked):.1f}%"))
    html_cards = "".join(f'<div class="card"><b>{_e(v)}</b>{_e(k)}</div>' for k, v in cards)
    parts = [f'<div class="cards">{html_cards}</div>']
    errors = run.get("errors_by_code") or {}
    if errors:
        rows = "".join(f"<tr><td>{_e(c)}</td><td>{n}</td></tr>" for c, n in errors.items())
        parts.append(
            f'<h2>Errors by code</h2><table class="small"><tr><th>code</th><th>rows</th></tr>'
            f"{rows}</table>"
        )
    if qc_counts:
        title = "QC pass rate by round" + (f" ({', '.join(sorted(profiles))})" if profiles else "")
        rows = "".join(
            f"<tr><td>round {k}</td><td>{p}</td><td>{n}</td><td>{100.0 * p / n:.1f}%</td></tr>"
            for k, (p, n) in sorted(qc_counts.items())
        )
        parts.append(
            f'<h2>{_e(title)}</h2><table class="small qc-rates"><tr><th>round</th>'
            f"<th>passed</th><th>checked</th><th>rate</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _header(run: dict, run_id: str) -> str:
    engine = run.get("engine") or {}
    params = run.get("parameters") or {}
    audit = run.get("audit") or {}
    edits = ";".join(params.get("edits") or []) or "(per row)"
    return (
        f"<h1>stepedit run {_e(run_id)}</h1>"
        f'<div class="sub">engine {_e(engine.get("name"))} {_e(engine.get("version"))} · '
        f"edit {_e(edits)} · {_e(params.get('iterations'))} round(s) · "
        f"{_e(run.get('started_at'))} → {_e(run.get('ended_at'))}</div>"
        f'<div class="sub">run digest {_e(audit.get("run_digest", "(none)"))} · '
        f"check with <code>stepedit verify</code></div>"
    )


MEDIA_MODES = ("all", "index", "none")


def build_report(out: str, run_id: str, page_size: int = 200, media: str = "all") -> str:
    """Write RUN/report/ and return the URI of its index.html. `media`: audio players and
    spectrograms for every clip (`all`), only for the clips on index.html, i.e. the first page
    and every failing clip (`index`: for very large runs, where the media would copy every
    round's audio a second time), or none."""
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if media not in MEDIA_MODES:
        raise ValueError(f"media must be one of {', '.join(MEDIA_MODES)}, got {media!r}")
    store = RunStore(out, run_id)
    run = store.read_json(store.run_json) if store.exists(store.run_json) else {}
    builder = ReportBuilder(store)
    by_row = builder.load_clips()
    if media == "none":
        builder.media_rows = set()
    elif media == "index":
        rows = sorted(by_row)
        failed = {r for r, c in by_row.items() if c.status != "ok"}
        builder.media_rows = set(rows[:page_size]) | failed | builder.qc_failing_rows()
    builder.add_records(by_row)
    builder.add_sources(by_row)
    builder.add_delivered(by_row)
    clips = [by_row[k] for k in sorted(by_row)]

    charts = "".join(
        trend_svg(metric, round_stats(rounds)) for metric, rounds in sorted(builder.values.items())
    )
    chunks = [clips[i : i + page_size] for i in range(0, len(clips), page_size)] or [[]]
    pages = ["index.html"] + [f"page-{n:04d}.html" for n in range(2, len(chunks) + 1)]
    first = {c.row_index for c in chunks[0]}
    failing = [c for c in clips if c.failing and c.row_index not in first]
    fail_chunks = [
        failing[i : i + FAILURES_ON_INDEX] for i in range(0, len(failing), FAILURES_ON_INDEX)
    ]
    fail_pages = [f"failures-{n:04d}.html" for n in range(2, len(fail_chunks) + 1)]
    header = _header(run, run_id) + ratings_bar(run_id, (run.get("audit") or {}).get("run_digest"))

    index_body = _summary(run, clips, builder.qc_counts, builder.profiles)
    index_body += margin_section(store)  # a margin set's run: its margins first
    index_body += f'<h2>Metrics by round</h2><div class="charts">{charts}</div>'
    index_body += accuracy_section(store)  # empty until the run is judged (stepedit judge)
    index_body += f"<h2>Clips 1-{len(chunks[0])} of {len(clips)}</h2>{_nav(pages, pages[0])}"
    index_rows = chunks[0] + (fail_chunks[0] if fail_chunks else [])
    if fail_chunks:
        more = (
            " (more: " + " ".join(f'<a href="{p}">{p}</a>' for p in fail_pages) + ")"
            if fail_pages
            else ""
        )
        index_body += f'<div class="sub">with every failing clip after them{more}</div>'
    index_body += _table(index_rows)
    store.write_bytes(store.report_index, _page(f"stepedit {run_id}", header, index_body).encode())
    for name, chunk in zip(pages[1:], chunks[1:], strict=True):
        body = f"<h2>Clips {chunk[0].row_index + 1}-{chunk[-1].row_index + 1}</h2>"
        body += _nav(pages, name) + _table(chunk)
        store.write_bytes(
            builder.path(name), _page(f"stepedit {run_id} {name}", header, body).encode()
        )
    for name, chunk in zip(fail_pages, fail_chunks[1:], strict=True):
        body = f'<h2>Failing clips</h2><a href="index.html">back to the summary</a>{_table(chunk)}'
        store.write_bytes(
            builder.path(name), _page(f"stepedit {run_id} {name}", header, body).encode()
        )
    summary = {"clips": len(clips), "pages": pages, "failure_pages": fail_pages}
    store.write_bytes(store.report_summary, json.dumps(summary, indent=2).encode())
    return store.uri(store.report_index)
