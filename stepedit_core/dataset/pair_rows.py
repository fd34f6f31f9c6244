"""The run behind a margin set: one manifest row per (clip, attribute).

Each source row becomes one row per attribute, whose `edit` cell is the attribute (engines that
clone: `clone;ATTRIBUTE`, so round 0 is the neutral clone of the row's text in its voice and
round 1 edits that clone). The derived manifest is an ordinary input manifest: the run that
edits it is a normal durable run, resumed exactly once like any other.
"""

from __future__ import annotations

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.catalog.manifest import ManifestError, check_schema
from stepedit_core.foundation.edits import EditSpec, format_chain, parse_edit, refusal

PAIR_SEPARATOR = "~"  # pair clip id: SOURCE_CLIP_ID~ATTRIBUTE
SOURCE_CLIP_ID = "source_clip_id"
ATTRIBUTE = "attribute"
SOURCE_ROW = "source_row_index"
ADDED_COLUMNS = (SOURCE_CLIP_ID, ATTRIBUTE, SOURCE_ROW)
CLONE = parse_edit("clone")


def neutral_is_clone(engine: str) -> bool:
    """Engines that can clone make the neutral version (a clone of the row's text in its
    voice); for the others the neutral version is the source audio."""
    return refusal(engine, CLONE) is None


def pair_clip_id(clip_id: str | None, attribute: EditSpec) -> str | None:
    # an empty source id stays empty: the run refuses the row as missing_clip_id
    return f"{clip_id}{PAIR_SEPARATOR}{attribute}" if clip_id and clip_id.strip() else None


def read_source(manifest_uri: str) -> pa.Table:
    try:
        with fsspec.open(manifest_uri, "rb") as handle:
            table = pq.read_table(handle)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {manifest_uri}") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise ManifestError(f"manifest {manifest_uri} is not a Parquet file: {exc}") from None
    check_schema(table.schema, manifest_uri)
    clash = [c for c in ADDED_COLUMNS if c in table.column_names]
    if clash:
        raise ManifestError(
            f"{manifest_uri} has column(s) a margin set adds: {', '.join(clash)}; rename them"
        )
    return table


def source_columns(manifest_uri: str) -> list[str]:
    """The source manifest's column names (its footer only)."""
    with fsspec.open(manifest_uri, "rb") as handle:
        return pq.read_schema(handle).names


def pair_rows(source: pa.Table, attributes: tuple[EditSpec, ...], engine: str) -> pa.Table:
    """The derived manifest: every source column, clip_id/edit (and, when cloning,
    target_text) rewritten, plus source_clip_id, attribute and source_row_index."""
    clone = neutral_is_clone(engine)
    rows = []
    for index, row in enumerate(source.to_pylist()):
        for attribute in attributes:
            derived = dict(row)
            derived["clip_id"] = pair_clip_id(row.get("clip_id"), attribute)
            chain = (CLONE, attribute) if clone else (attribute,)
            derived["edit"] = format_chain(chain)
            if clone and not row.get("target_text"):
                derived["target_text"] = row.get("text")  # the clone speaks the row's own text
            derived[SOURCE_CLIP_ID] = row.get("clip_id")
            derived[ATTRIBUTE] = str(attribute)
            derived[SOURCE_ROW] = index
            rows.append(derived)
    fields = [f for f in source.schema if f.name not in ("edit", "target_text")]
    schema = pa.schema(
        [
            *fields,
            pa.field("edit", pa.string()),
            pa.field("target_text", pa.string()),
            pa.field(SOURCE_CLIP_ID, pa.string()),
            pa.field(ATTRIBUTE, pa.string()),
            pa.field(SOURCE_ROW, pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema)
