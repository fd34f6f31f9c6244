"""Input and output manifests: schema checks, per-row validation, the merged output manifest.

A problem with the whole manifest (a required column missing, wrong column type) refuses the run
before any work. A problem with one row becomes a failure record for that row and the rest of
the run goes on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stepedit_core.edits import EditError, EditSpec, format_chain, parse_chain
from stepedit_core.engines.base import Engine

REQUIRED_COLUMNS = ("clip_id", "audio_uri")
OPTIONAL_COLUMNS = ("text", "language", "speaker", "edit", "target_text")
STRING_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
OUTPUT_COLUMNS = ("status", "output_uri", "error", "error_code", "iterations_done")
READ_BATCH_ROWS = 8192  # rows per streamed batch: driver memory stays flat on large catalogs

RESULT_SCHEMA = pa.schema(
    [
        ("row_index", pa.int64()),
        ("clip_id", pa.string()),
        ("status", pa.string()),
        ("output_uri", pa.string()),
        ("error", pa.string()),
        ("error_code", pa.string()),
        ("iterations_done", pa.int32()),
    ]
)

PLAN_SCHEMA = pa.schema(
    [
        ("row_index", pa.int64()),
        ("clip_id", pa.string()),
        ("audio_uri", pa.string()),
        ("edit", pa.string()),
        ("text", pa.string()),
        ("target_text", pa.string()),
        ("language", pa.string()),
        ("speaker", pa.string()),
        ("seed", pa.int64()),
    ]
)


class ManifestError(ValueError):
    """The manifest as a whole can not be used; the run is refused."""


def open_parquet(uri: str) -> pq.ParquetFile:
    try:
        handle = fsspec.open(uri, "rb").open()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {uri}") from None
    try:
        return pq.ParquetFile(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"manifest {uri} is not a Parquet file: {exc}") from None


def check_schema(schema: pa.Schema, uri: str = "manifest") -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise ManifestError(
            f"{uri} is missing required column(s): {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)})"
        )
    clash = [c for c in OUTPUT_COLUMNS if c in schema.names]
    if clash:
        raise ManifestError(
            f"{uri} has column(s) the output manifest adds: {', '.join(clash)}; rename them"
        )
    for name in STRING_COLUMNS:
        if name in schema.names:
            kind = schema.field(name).type
            if not (
                pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)
            ):
                raise ManifestError(f"column {name!r} in {uri} must be string, found {kind}")


def file_sha256(uri: str) -> str:
    digest = hashlib.sha256()
    with fsspec.open(uri, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clip_seed(clip_id: str, base_seed: int) -> int:
    """Per-clip seed: stable across reruns, independent of row order and sharding."""
    digest = hashlib.sha256(f"{base_seed}:{clip_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _clean(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if text.strip() else None


def iter_rows(uri: str) -> Iterator[tuple[int, dict]]:
    """(row_index, row) over the columns stepedit reads, streamed in batches."""
    parquet = open_parquet(uri)
    columns = [c for c in STRING_COLUMNS if c in parquet.schema_arrow.names]
    index = 0
    for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            yield index, row
            index += 1


def plan_rows(
    uri: str, job_chain: tuple[EditSpec, ...], engine: Engine, base_seed: int
) -> Iterator[tuple[dict | None, dict | None]]:
    """Yield (work_row, None) for each row to edit and (None, failure) for each row refused."""
    seen: set[str] = set()
    for index, row in iter_rows(uri):
        clip_id = _clean(row.get("clip_id"))
        chain, problem = _check_row(row, clip_id, seen, job_chain, engine)
        if clip_id is not None:
            seen.add(clip_id)
        if problem is not None:
            code, message = problem
            yield None, failure_row(index, clip_id, code, f"row {index}: {message}")
            continue
        yield (
            {
                "row_index": index,
                "clip_id": clip_id,
                "audio_uri": row["audio_uri"],
                "edit": format_chain(chain),
                "text": _clean(row.get("text")),
                "target_text": _clean(row.get("target_text")),
                "language": _clean(row.get("language")),
                "speaker": _clean(row.get("speaker")),
                "seed": clip_seed(clip_id or "", base_seed),
            },
            None,
        )


Problem = tuple[str, str]  # (error_code, message)


def _check_row(
    row: dict, clip_id: str | None, seen: set[str], job_chain: tuple[EditSpec, ...], engine: Engine
) -> tuple[tuple[EditSpec, ...], None] | tuple[None, Problem]:
    """The row's edit chain (its `edit` cell, else the job's), or why the row is refused."""
    if clip_id is None:
        return None, ("missing_clip_id", "field 'clip_id' is empty; expected a non-empty string")
    if clip_id in seen:
        return None, (
            "duplicate_clip_id",
            f"clip_id {clip_id!r} already appears earlier in the manifest",
        )
    if _clean(row.get("audio_uri")) is None:
        return None, ("missing_audio_uri", "field 'audio_uri' is empty; expected a path or URI")
    cell = _clean(row.get("edit"))
    try:
        chain = parse_chain(cell) if cell is not None else job_chain
    except EditError as exc:
        return None, ("invalid_edit", f"field 'edit' {row.get('edit')!r}: {exc}")
    if not chain:
        return None, ("missing_edit", "no edit: the job gives no --edit and field 'edit' is empty")
    problem = engine.row_problem(chain, _clean(row.get("text")), _clean(row.get("target_text")))
    return (None, problem) if problem is not None else (chain, None)


def failure_row(index: int, clip_id: str | None, code: str, message: str) -> dict:
    return {
        "row_index": index,
        "clip_id": clip_id,
        "status": "failed",
        "output_uri": None,
        "error": message,
        "error_code": code,
        "iterations_done": 0,
    }


def merge_output(input_uri: str, results: pa.Table, sink: pa.NativeFile | object) -> dict:
    """Write the output manifest: every input row in input order, all input columns, plus the
    outcome columns. A row with no result (should not happen) is reported, never dropped."""
    order = pc.sort_indices(results, sort_keys=[("row_index", "ascending")])
    results = results.take(order)
    by_row = {r: i for i, r in enumerate(results.column("row_index").to_pylist())}
    parquet = open_parquet(input_uri)
    writer: pq.ParquetWriter | None = None
    counts = {"ok": 0, "failed": 0}
    start = 0
    for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS):
        rows = range(start, start + batch.num_rows)
        start += batch.num_rows
        picked = [by_row.get(r) for r in rows]
        if any(p is None for p in picked):
            lost = [r for r, p in zip(rows, picked, strict=True) if p is None][:5]
            raise RuntimeError(f"no result recorded for input rows {lost}: refusing to drop them")
        outcome = results.take(pa.array(picked, type=pa.int64()))
        table = pa.Table.from_batches([batch])
        for name in OUTPUT_COLUMNS:
            table = table.append_column(name, outcome.column(name))
        for status in outcome.column("status").to_pylist():
            counts[status] = counts.get(status, 0) + 1
        if writer is None:
            writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
        writer.write_table(table)
    if writer is None:  # empty manifest: still write a valid file with the full schema
        schema = parquet.schema_arrow
        for name in OUTPUT_COLUMNS:
            schema = schema.append(RESULT_SCHEMA.field(name))
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    writer.close()
    counts["rows"] = start
    return counts
