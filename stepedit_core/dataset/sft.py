"""sft.parquet: each (clip, attribute) row of the run paired, scored and written, in batches.

The run's output manifest is read in batches of `BATCH_ROWS` rows; the records of a batch are
found through the run's records index (audit/records.parquet) and read one row group at a time,
the pair audio is fetched by a few threads (object stores are slow per request) and scored in
this process, and each batch is appended to the file. Memory stays flat with catalog size: one
batch of rows, records and audio at a time.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.catalog.access import AllowedRoots
from stepedit_core.catalog.records import AUDIO_COLUMNS, round_flac
from stepedit_core.dataset.pair_rows import ATTRIBUTE, SOURCE_CLIP_ID
from stepedit_core.dataset.scorers import Margin, MarginScorer, Pair
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.edits import EditSpec, parse_edit
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.retry import retrying
from stepedit_core.foundation.store import LOCAL, RunStore

BATCH_ROWS = 512
READ_THREADS = 8
SFT_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("attribute", pa.string()),
        ("instruction", pa.string()),
        ("neutral_uri", pa.string()),
        ("edited_uri", pa.string()),
        ("neutral_sha256", pa.string()),
        ("edited_sha256", pa.string()),
        ("margin", pa.int32()),
        ("kept", pa.bool_()),
        ("margin_scorer", pa.string()),
        ("margin_basis", pa.string()),
        ("margin_measure", pa.float64()),
        ("margin_measures_json", pa.string()),
        ("margin_note", pa.string()),
        ("neutral_tokens", pa.list_(pa.int32())),
        ("edited_tokens", pa.list_(pa.int32())),
        ("edited_input_tokens", pa.list_(pa.int32())),  # the neutral version as the edit read it
        ("neutral_record_sha256", pa.string()),
        ("edited_record_sha256", pa.string()),
        ("run_id", pa.string()),
        ("pair_clip_id", pa.string()),
        ("status", pa.string()),
        ("error_code", pa.string()),
        ("error", pa.string()),
    ]
)
RECORD_COLUMNS = [
    "row_index",
    "iteration",
    "instruction",
    "output_sha256",
    "record_sha256",
    "input_tokens",
    "output_tokens",
]
COUNTED = ("attribute", "status", "margin", "kept")  # what the data card counts
PASSED_PREFIXES = ("license", "consent")  # rights columns, carried as they are
PASSED_COLUMNS = ("text", "language", "speaker")  # and what a trainer reads


@dataclass
class SetWriting:
    """What pairing needs to know about the set being written."""

    store: RunStore
    run_id: str
    scorer: MarginScorer
    min_margin: float
    roots: AllowedRoots
    clone: bool  # the neutral version is the run's round-0 clone (else: the source file)
    passed: list[str]


def passed_columns(names: list[str]) -> list[str]:
    rights = [n for n in names if n.lower().startswith(PASSED_PREFIXES)]
    return rights + [n for n in PASSED_COLUMNS if n in names and n not in rights]


def write_sft(writing: SetWriting, path: str, metadata: dict[str, str]) -> list[dict[str, Any]]:
    """Write the set to `path` (whole or not at all); returns each row's attribute, status,
    margin and kept flag (what the data card counts)."""
    store = writing.store
    locations = record_locations(store)
    counted: list[dict[str, Any]] = []
    with store.fs.open(store.manifest, "rb") as handle:
        manifest = pq.ParquetFile(handle)
        schema = SFT_SCHEMA
        for name in writing.passed:  # the manifest's own types (a consent flag may be a bool)
            schema = schema.append(manifest.schema_arrow.field(name))
        schema = schema.with_metadata(metadata)
        with (
            staged_file(store, path) as local,
            pq.ParquetWriter(local, schema, compression="zstd") as sink,
        ):
            start = 0
            for batch in manifest.iter_batches(batch_size=BATCH_ROWS):
                rows = batch.to_pylist()
                span = range(start, start + len(rows))
                out = _pair_batch(
                    writing, rows, start, _read_records(store, locations, span, writing)
                )
                sink.write_table(pa.Table.from_pylist(out, schema))
                counted += [{k: r.get(k) for k in COUNTED} for r in out]
                start += len(rows)
            if start == 0:
                sink.write_table(schema.empty_table())
    return counted


@contextmanager
def staged_file(store: RunStore, path: str) -> Iterator[str]:
    """A local file to write; on success it becomes `path` whole (local disk: renamed in
    place; object stores: one upload, retried), on failure it is removed."""
    if store.protocol in LOCAL:
        folder = posixpath.dirname(path)
        store.fs.makedirs(folder, exist_ok=True)
        tmp = posixpath.join(folder, f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}")
    else:
        handle, tmp = tempfile.mkstemp(suffix=".parquet")
        os.close(handle)
    try:
        yield tmp
        if store.protocol in LOCAL:
            store.fs.mv(tmp, path)
        else:
            retrying(lambda: store.fs.put_file(tmp, path), f"writing {store.uri(path)}")
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


Location = tuple[str, int, int, int]  # part, row group, row in group, iteration


def record_locations(store: RunStore) -> dict[int, list[Location]]:
    """row_index -> where its records are, from the run's records index."""
    index = store.read_table(
        store.audit_index, ["row_index", "iteration", "part", "row_group", "row"]
    )
    found: dict[int, list[Location]] = defaultdict(list)
    for r in index.to_pylist():
        found[r["row_index"]].append((r["part"], r["row_group"], r["row"], r["iteration"]))
    return found


def _read_records(
    store: RunStore, locations: dict[int, list[Location]], rows: range, writing: SetWriting
) -> dict[tuple[int, int], dict[str, Any]]:
    """(row_index, iteration) -> the record fields the set needs, for `rows`; the round-0
    clone's FLAC too when the neutral version is a clone."""
    wanted: dict[tuple[str, int], list[int]] = defaultdict(list)
    for row_index in rows:
        for part, group, row, _ in locations.get(row_index, []):
            wanted[(part, group)].append(row)
    columns = RECORD_COLUMNS + (AUDIO_COLUMNS if writing.clone else [])
    found: dict[tuple[int, int], dict[str, Any]] = {}
    for (part, group), picks in wanted.items():
        with store.fs.open(store.path(part), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in columns if c in parquet.schema_arrow.names]
            table = parquet.read_row_group(group, columns=present)
        for record in table.take(picks).to_pylist():
            if record["iteration"] == 0 and writing.clone:  # the clone's bytes, from its object
                record["audio_flac"] = round_flac(record, store.run_uri)
            else:
                record.pop("audio_flac", None)  # the delivered file holds the edited audio
            found[(record["row_index"], record["iteration"])] = record
    return found


def _pair_batch(
    writing: SetWriting,
    rows: list[dict[str, Any]],
    start: int,
    records: dict[tuple[int, int], dict[str, Any]],
) -> list[dict[str, Any]]:
    out = [_base_row(writing, row) for row in rows]
    ready = []
    for offset, row in enumerate(rows):
        if row["status"] != "ok":
            continue
        index = start + offset
        edited = records.get((index, 1))
        neutral = records.get((index, 0)) if writing.clone else None
        if edited is None or (writing.clone and neutral is None):
            out[offset]["status"] = "failed"
            out[offset]["error"] = f"row {index}: the run holds no records of this pair"
            continue
        ready.append((offset, index, row, neutral, edited))
    with ThreadPoolExecutor(READ_THREADS) as pool:
        fetched = list(pool.map(lambda item: _fetch(writing, *item[1:4]), ready))

    # a scorer that waits on a remote judge scores several pairs at once (each fills its own row)
    def score(job: tuple[tuple, Versions]) -> None:
        (offset, _, row, neutral, edited), versions = job
        _score(writing, out[offset], row, neutral, edited, versions)

    with ThreadPoolExecutor(max(1, getattr(writing.scorer, "concurrency", 1))) as pool:
        list(pool.map(score, zip(ready, fetched, strict=True)))
    return out


def _base_row(writing: SetWriting, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "clip_id": row[SOURCE_CLIP_ID],
        "attribute": row[ATTRIBUTE],
        "run_id": writing.run_id,
        "pair_clip_id": row["clip_id"],
        "status": row["status"],
        "error_code": row["error_code"],
        "error": row["error"],
        "margin_scorer": writing.scorer.name,
        "kept": False,
        **{name: row.get(name) for name in writing.passed},
    }


Versions = tuple[str, bytes, bytes] | ItemFailure  # neutral uri, neutral bytes, edited bytes


def _fetch(
    writing: SetWriting, index: int, row: dict[str, Any], neutral: dict[str, Any] | None
) -> Versions:
    """Both versions' bytes. The neutral clone is written into the set from its record (every
    time: an earlier attempt's file may hold another clone); the source is read from its
    resolved URI, inside the run's allowed roots."""
    try:
        if neutral is not None:
            store = writing.store
            stem = posixpath.basename(store.audio_path(row["clip_id"], index))
            path = store.neutral_clone(stem)
            store.write_bytes(path, neutral["audio_flac"])
            neutral_uri, neutral_bytes = store.uri(path), neutral["audio_flac"]
        else:
            neutral_uri = writing.roots.check(row["audio_uri"])
            neutral_bytes = audio_io.read_bytes(neutral_uri)
        return neutral_uri, neutral_bytes, audio_io.read_bytes(row["output_uri"])
    except ItemFailure as exc:
        return exc


def _score(
    writing: SetWriting,
    out: dict[str, Any],
    row: dict[str, Any],
    neutral: dict[str, Any] | None,
    edited: dict[str, Any],
    versions: Versions,
) -> None:
    attribute: EditSpec = parse_edit(row[ATTRIBUTE])
    if isinstance(versions, ItemFailure):
        out["status"], out["error_code"], out["error"] = "failed", versions.code, str(versions)
        return
    neutral_uri, neutral_bytes, edited_bytes = versions
    try:
        pair = Pair(
            attribute,
            audio_io.decode(neutral_bytes, neutral_uri),
            audio_io.decode(edited_bytes, row["output_uri"]),
        )
    except ItemFailure as exc:
        out["status"], out["error_code"], out["error"] = "failed", exc.code, str(exc)
        return
    margin: Margin = writing.scorer.score(pair)
    out.update(
        instruction=edited.get("instruction") or str(attribute),
        neutral_uri=neutral_uri,
        edited_uri=row["output_uri"],
        neutral_sha256=audio_io.sha256_bytes(neutral_bytes),
        edited_sha256=audio_io.sha256_bytes(edited_bytes),
        margin=margin.value,
        kept=margin.value is not None and margin.value >= writing.min_margin,
        margin_basis=margin.basis,
        margin_measure=margin.measure,
        margin_measures_json=json.dumps(margin.measures, sort_keys=True),
        margin_note=margin.note,
        neutral_tokens=neutral.get("output_tokens") if neutral else None,
        edited_tokens=edited.get("output_tokens"),
        edited_input_tokens=edited.get("input_tokens"),
        neutral_record_sha256=neutral.get("record_sha256") if neutral else None,
        edited_record_sha256=edited.get("record_sha256"),
    )
