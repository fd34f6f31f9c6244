"""The three records a run writes, each with its Arrow schema and the one place it is made.

- `PlanRow`: a row checked and planned for editing (a row of a shard plan).
- `RowResult`: the outcome of one input row (joined onto the input manifest at merge).
- `RoundRecord`: one clip in one round (the iterations dataset). Its audio is a reference:
  `audio_ref` names the round's FLAC object relative to the run folder
  (`round-audio/<sha256>.flac`, so a run folder copied or moved whole stays readable),
  `output_sha256` is that object's hash and `sample_rate`/`channels`/`frames` its shape; the
  bytes never ride in the record. (A record made outside a run, with no store to publish to,
  keeps the bytes in `audio_flac` instead; `round_flac` reads either.)

A record is a small dataclass; `to_row()` gives the dict Arrow writes and `SCHEMA` its types.
The round record's schema here holds the shared columns only (`RoundRecord.SHARED_SCHEMA`):
each engine adds its own columns from its trace's declaration (traces.py), and
`round_schema` puts the two together (`stepedit_core.engines.round_record_schema` with every
registered engine's columns: the schema every run writes).
On disk a round is called an "iteration" (`iteration`, `iterations_done`, `iterations/`), the
word the command line uses (`--iterations`); in the code it is a round.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import pyarrow as pa

from stepedit_core.audit.records import seal as audit_seal
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.audio_ref import AudioRef, read_object, resolve_ref
from stepedit_core.foundation.clip_spec import ClipSpec
from stepedit_core.foundation.edits import EditSpec, format_chain, parse_chain
from stepedit_core.foundation.failures import check_code
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.foundation.store import ROUND_AUDIO
from stepedit_core.foundation.traces import RecordColumn
from stepedit_core.quality.qc import basic_metrics


@dataclass
class PlanRow:
    row_index: int
    clip_id: str
    audio_uri: str
    edits: tuple[EditSpec, ...]
    text: str | None
    target_text: str | None
    language: str | None
    speaker: str | None
    seed: int
    segments: str | None = None  # the `segments` cell (segment_texts.py), checked

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
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
            ("segments", pa.string()),
        ]
    )

    def to_row(self) -> dict[str, Any]:
        row = _shallow(self)
        row["edit"] = format_chain(row.pop("edits"))
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PlanRow:
        values = {f.name: row.get(f.name) for f in fields(cls) if f.name != "edits"}
        return cls(edits=parse_chain(row["edit"]), **values)

    def clip_spec(self) -> ClipSpec:
        return ClipSpec(
            row_index=self.row_index,
            clip_id=self.clip_id,
            audio_uri=self.audio_uri,
            edits=self.edits,
            text=self.text,
            target_text=self.target_text,
            segments=self.segments,
            language=self.language,
            speaker=self.speaker,
            seed=self.seed,
        )

    def work_item(self) -> WorkItem:
        return WorkItem(self.clip_spec())


@dataclass
class RowResult:
    row_index: int
    clip_id: str | None
    status: str  # "ok" or "failed"
    output_uri: str | None = None
    error: str | None = None
    error_code: str | None = None
    rounds_done: int = 0
    selected_round: int | None = None  # the round whose audio is delivered
    selection_reason: str | None = None
    qc_status: str | None = None  # "pass" / "fail" of the delivered round (None: no profile)
    qc_reasons: str | None = None  # why the delivered round fails delivery
    # incremental runs: the earlier run whose output this row reuses (None: edited in this run)
    reused_from_run: str | None = None
    text_source: str | None = None  # where the row's text came from: "manifest" or "asr"
    # JSON [{uri, sha256, start_s, end_s, trim_db}, ...] when the delivered files are not the
    # round's FLAC itself (another format, or parts of a long clip): see delivered_files.py
    delivered_files: str | None = None

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("row_index", pa.int64()),
            ("clip_id", pa.string()),
            ("status", pa.string()),
            ("output_uri", pa.string()),
            ("error", pa.string()),
            ("error_code", pa.string()),
            ("iterations_done", pa.int32()),
            ("selected_round", pa.int32()),
            ("selection_reason", pa.string()),
            ("qc_status", pa.string()),
            ("qc_reasons", pa.string()),
            ("reused_from_run", pa.string()),
            ("text_source", pa.string()),
            ("delivered_files", pa.string()),
        ]
    )
    # the columns the output manifest adds to the input's
    OUTPUT_COLUMNS: ClassVar[tuple[str, ...]] = tuple(
        name for name in SCHEMA.names if name not in ("row_index", "clip_id")
    )

    @classmethod
    def failed(
        cls, row_index: int, clip_id: str | None, code: str, message: str, rounds_done: int = 0
    ) -> RowResult:
        return cls(row_index, clip_id, "failed", None, message, check_code(code), rounds_done)

    @classmethod
    def ok(cls, row_index: int, clip_id: str, output_uri: str, rounds_done: int) -> RowResult:
        return cls(row_index, clip_id, "ok", output_uri, None, None, rounds_done)

    def deliver(self, record: RoundRecord, reason: str | None) -> None:
        """Say which round is delivered, why, and whether it passes the delivery profile."""
        self.selected_round, self.selection_reason = record.round, reason
        if record.qc_pass is not None:
            self.qc_status = "pass" if record.qc_pass else "fail"
            self.qc_reasons = record.qc_reasons

    def to_row(self) -> dict[str, Any]:
        row = _shallow(self)
        row["iterations_done"] = row.pop("rounds_done")
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RowResult:
        keep = ("status", "output_uri", "error", "error_code", "selected_round",
                "selection_reason", "qc_status", "qc_reasons", "reused_from_run",
                "text_source", "delivered_files")  # fmt: skip
        values = {k: row.get(k) for k in keep}
        return cls(
            row["row_index"], row.get("clip_id"), rounds_done=row["iterations_done"], **values
        )


def round_key(
    input_sha256: str, edit: str, round_number: int, engine: str, engine_version: str, seed: int
) -> str:
    """Names one clip-round: same input audio, edit, round, engine and seed -> same key."""
    material = json.dumps([input_sha256, edit, round_number, engine, engine_version, seed])
    return hashlib.sha256(material.encode()).hexdigest()


@dataclass
class RoundRecord:
    clip_id: str
    row_index: int
    round: int
    edit: str
    key: str
    input_sha256: str
    output_sha256: str | None
    status: str
    error_code: str | None
    error: str | None
    engine: str
    engine_version: str
    seed: int
    text: str | None
    timings_json: str
    sample_rate: int | None = None
    channels: int | None = None
    duration_in_s: float | None = None
    duration_s: float | None = None
    peak_dbfs: float | None = None
    rms_dbfs: float | None = None
    clipped_samples: int | None = None
    qc_profile: str | None = None  # the delivery profile checked (`none`: metrics only)
    qc_pass: bool | None = None
    qc_reasons: str | None = None  # each failed limit, "; "-joined
    qc_json: str | None = None  # written and read by stepedit_core.quality.qc_result
    # word timings of the round's output (stepedit_core/words), in its timeline:
    # [{"word", "start", "end", "confidence", "filler"}]; and where `text` came from
    # ("manifest" or "asr")
    words_json: str | None = None
    text_source: str | None = None
    prev_record_sha256: str | None = None  # the hash chain: see stepedit_core/audit
    record_sha256: str | None = None
    audio_ref: str | None = None  # the round's FLAC object, run-relative (hash: output_sha256)
    frames: int | None = None
    audio_flac: bytes | None = None  # only for records made outside a run (no store)
    # the engine's own columns (its trace's `record_values`), by name
    engine_columns: dict[str, Any] = field(default_factory=dict)

    SHARED_SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("clip_id", pa.string()),
            ("row_index", pa.int64()),
            ("iteration", pa.int32()),
            ("edit", pa.string()),
            ("key", pa.string()),
            ("input_sha256", pa.string()),
            ("output_sha256", pa.string()),
            ("status", pa.string()),
            ("error_code", pa.string()),
            ("error", pa.string()),
            ("engine", pa.string()),
            ("engine_version", pa.string()),
            ("seed", pa.int64()),
            ("text", pa.string()),
            ("timings_json", pa.string()),
            ("sample_rate", pa.int32()),
            ("channels", pa.int32()),
            ("duration_in_s", pa.float64()),
            ("duration_s", pa.float64()),
            ("peak_dbfs", pa.float64()),
            ("rms_dbfs", pa.float64()),
            ("clipped_samples", pa.int64()),
            ("qc_profile", pa.string()),
            ("qc_pass", pa.bool_()),
            ("qc_reasons", pa.string()),
            ("qc_json", pa.string()),
            ("words_json", pa.string()),
            ("text_source", pa.string()),
            ("prev_record_sha256", pa.string()),
            ("record_sha256", pa.string()),
            ("audio_ref", pa.string()),
            ("frames", pa.int64()),
            ("audio_flac", pa.binary()),
        ]
    )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def flac(self, run_uri: str) -> bytes | None:
        """The round's FLAC bytes (read from its object in the run at `run_uri`), None when
        it has no audio."""
        return round_flac(self.to_row(), run_uri)

    def to_row(self) -> dict[str, Any]:
        row = _shallow(self)
        row["iteration"] = row.pop("round")
        row.update(row.pop("engine_columns"))
        return row

    def seal(self, prev_record_sha256: str) -> None:
        """Link this record to the clip's previous one (the source file's hash for the first
        round) and hash it. Last thing done to a record: a field set later breaks the seal."""
        sealed = audit_seal(self.to_row(), prev_record_sha256)
        self.prev_record_sha256 = sealed["prev_record_sha256"]
        self.record_sha256 = sealed["record_sha256"]

    @classmethod
    def of(cls, item: WorkItem, engine: str, engine_version: str) -> RoundRecord:
        """The record of the round `item` just finished: its output encoded, hashed and
        measured when it succeeded, the failure otherwise."""
        edit = format_chain(item.round_edits)
        input_sha = item.input_sha256 or ""
        seed = item.round_seed
        record = cls(
            clip_id=item.clip_id,
            row_index=item.row_index,
            round=item.round,
            edit=edit,
            key=round_key(input_sha, edit, item.round, engine, engine_version, seed),
            input_sha256=input_sha,
            output_sha256=None,
            status="failed" if item.failed else "ok",
            error_code=item.error_code,
            error=item.error,
            engine=engine,
            engine_version=engine_version,
            seed=seed,
            text=item.text,
            timings_json=json.dumps({k: round(v, 6) for k, v in item.timings.items()}),
            duration_in_s=round(item.audio.duration, 4) if item.audio is not None else None,
            words_json=item.words.to_json() if item.words is not None else None,
            text_source=text_source_of(item),
            engine_columns=item.trace.record_values() if item.trace is not None else {},
        )
        if item.failed:
            return record
        if item.output is None:
            item.fail("no_output", f"engine stages produced no audio in round {item.round}")
            record.status, record.error_code, record.error = "failed", item.error_code, item.error
            return record
        output = item.output
        if isinstance(output, AudioRef):
            record.audio_ref, record.output_sha256 = run_relative_ref(output.uri), output.sha256
        else:
            record.audio_flac = audio_io.encode_flac(output)
            record.output_sha256 = audio_io.sha256_bytes(record.audio_flac)
        record.sample_rate, record.channels = output.sample_rate, output.channels
        record.frames = output.frames
        # measured by the QC stage where it ran (it had the samples), here otherwise
        metrics = item.round_qc.basic if item.round_qc else basic_metrics(item.samples("output"))
        record.duration_s = metrics["duration_s"]
        record.peak_dbfs = metrics["peak_dbfs"]
        record.rms_dbfs = metrics["rms_dbfs"]
        record.clipped_samples = metrics["clipped_samples"]
        return record


def run_relative_ref(uri: str) -> str:
    """What a record keeps of a round object's URI: its name under the run folder."""
    return posixpath.join(ROUND_AUDIO, posixpath.basename(uri))


def audio_ref_of(record: dict[str, Any], run_uri: str) -> AudioRef | None:
    """The reference a record (a row as read back) holds, None when it holds none."""
    if not record.get("audio_ref") or not record.get("output_sha256"):
        return None
    return AudioRef(
        resolve_ref(record["audio_ref"], run_uri),
        record["output_sha256"],
        int(record.get("sample_rate") or 0),
        int(record.get("frames") or 0),
        int(record.get("channels") or 0),
    )


def round_flac(record: dict[str, Any], run_uri: str) -> bytes | None:
    """A round's FLAC bytes: read from the object the record references in the run at
    `run_uri` (readers that need them whole: judges, datasets, the review page), or kept
    inside a record made outside a run."""
    if record.get("audio_flac") is not None:
        return record["audio_flac"]
    ref = record.get("audio_ref")
    return read_object(resolve_ref(ref, run_uri)) if ref else None


# the columns a reader of round audio asks for (`round_flac` needs them all)
AUDIO_COLUMNS = ["audio_ref", "output_sha256", "sample_rate", "frames", "channels", "audio_flac"]


def text_source_of(item: WorkItem) -> str | None:
    """Where the item's text came from: the ASR (`asr`), the manifest, or nowhere (None)."""
    return item.text_source or ("manifest" if (item.text or "").strip() else None)


def _shallow(record: Any) -> dict[str, Any]:
    """Fields as a dict, values as they are (`asdict` would turn an EditSpec into a dict)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}


def round_schema(engine_columns: Iterable[RecordColumn]) -> pa.Schema:
    """The round record's schema: the shared columns and the engines' own, each after the column
    its declaration names. Engines may declare the same column (same name and type: one column);
    a column that clashes with a shared one, or with another engine's of another type, is an
    error in that declaration."""
    schema_fields = list(RoundRecord.SHARED_SCHEMA)
    for column in engine_columns:
        names = [f.name for f in schema_fields]
        if column.name in names:
            same = schema_fields[names.index(column.name)]
            if column.name in RoundRecord.SHARED_SCHEMA.names or same.type != column.type:
                raise ValueError(
                    f"record column {column.name!r} ({column.type}) clashes with the "
                    f"{same.type} column of that name already in the round record"
                )
            continue
        if column.after not in names:
            raise ValueError(
                f"record column {column.name!r} goes after {column.after!r}, which the round "
                f"record does not have; expected one of {names}"
            )
        schema_fields.insert(names.index(column.after) + 1, pa.field(column.name, column.type))
    return pa.schema(schema_fields)


def table_of(records: list[Any], schema: pa.Schema) -> pa.Table:
    """An Arrow table of records of one type (an empty list gives an empty table)."""
    return pa.Table.from_pylist([r.to_row() for r in records], schema)


def round_table(records: list[RoundRecord], schema: pa.Schema) -> pa.Table:
    """The round records' table; an engine column the schema lacks (an engine that is not
    registered) is an error, never a column silently left out of the sealed files."""
    for record in records:
        unknown = sorted(set(record.engine_columns) - set(schema.names))
        if unknown:
            raise ValueError(
                f"row {record.row_index}, round {record.round}: engine {record.engine!r} "
                f"fills {unknown}, which the round record schema does not have; expected "
                "the engine registered in stepedit_core.engines.ENGINES"
            )
    return table_of(records, schema)
