"""Input and output manifests: the columns stepedit reads, schema checks, streaming rows, and
the merged output manifest.

A problem with the whole manifest (a required column missing, wrong column type) refuses the run
before any work. Checking single rows against an engine is planning's job (planning.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stepedit_core.catalog.records import RowResult
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.sources import special_kind

REQUIRED_COLUMNS = ("clip_id", "audio_uri")
OPTIONAL_COLUMNS = ("text", "language", "speaker", "edit", "target_text", "segments")
STRING_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
OUTPUT_COLUMNS = RowResult.OUTPUT_COLUMNS
READ_BATCH_ROWS = 8192  # rows per streamed batch: driver memory stays flat on large catalogs


class ManifestError(RunRefused):
    """The manifest as a whole can not be used; the run is refused."""


def open_parquet(uri: str) -> pq.ParquetFile:
    kind = special_kind(uri)
    if kind is not None:  # opening a FIFO would block: refuse it from its stat
        raise ManifestError(f"manifest {uri} is {kind}, not a regular file")
    try:
        handle = fsspec.open(uri, "rb").open()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {uri}") from None
    try:
        return pq.ParquetFile(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"manifest {uri} is not a Parquet file: {exc}") from None


def check_schema(schema: pa.Schema, uri: str = "manifest") -> None:
    doubled = sorted({n for n in schema.names if schema.names.count(n) > 1})
    if doubled:
        raise ManifestError(
            f"{uri} has duplicate column name(s): {', '.join(doubled)}; each column needs a "
            "name of its own"
        )
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


def clean(value: object) -> str | None:
    """A cell as text, or None when it is missing or blank."""
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


@dataclass
class MergeCounts:
    """Counts made once, from the merged rows: every failure counted by its code."""

    rows: int = 0
    ok: int = 0
    failed: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)


def write_output_manifest(
    input_uri: str, results: pa.Table, sink: pa.NativeFile | object
) -> MergeCounts:
    """Write the output manifest: every input row in input order, all input columns, plus the
    outcome columns. A row with no result (should not happen) is reported, never dropped."""
    order = pc.sort_indices(results, sort_keys=[("row_index", "ascending")])
    results = results.take(order)
    by_row = {r: i for i, r in enumerate(results.column("row_index").to_pylist())}
    parquet = open_parquet(input_uri)
    writer: pq.ParquetWriter | None = None
    counts = MergeCounts()
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
        _count(counts, outcome)
        if writer is None:
            writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
        writer.write_table(table)
    if writer is None:  # empty manifest: still write a valid file with the full schema
        schema = parquet.schema_arrow
        for name in OUTPUT_COLUMNS:
            schema = schema.append(RowResult.SCHEMA.field(name))
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    writer.close()
    counts.rows = start
    counts.errors_by_code = dict(sorted(counts.errors_by_code.items()))
    return counts


def _count(counts: MergeCounts, outcome: pa.Table) -> None:
    statuses = outcome.column("status").to_pylist()
    codes = outcome.column("error_code").to_pylist()
    for status, code in zip(statuses, codes, strict=True):
        if status == "ok":
            counts.ok += 1
            continue
        counts.failed += 1
        code = code or "stage_error"  # a failed row always has a code; never count it as none
        counts.errors_by_code[code] = counts.errors_by_code.get(code, 0) + 1
