"""Margin sets: (neutral, edited) pairs of the catalog's clips, scored 1-10, as a dataset.

`build_margin_set(spec)`:
1. writes the derived manifest (pair_rows.py) to RUN/dataset/rows.parquet;
2. runs it as a normal durable run under the same run id (`run_job`, or the Prefect flow
   handed in as `run`), so a crash resumes exactly once;
3. pairs each row's neutral version (the source audio, or the round-0 clone) with its edited
   version (the delivered round), scores the pair (scorers.py) and writes
   RUN/dataset/sft.parquet, its data card RUN/dataset/README.md, and the review page.

Every (clip, attribute) gets a row in the set, failed ones included (`status`, `error_code`):
`kept` says which pairs are training data.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, model_validator

from stepedit_core import audio as audio_io
from stepedit_core.access import AllowedRoots, default_root, storage_options_installed
from stepedit_core.dataset import card
from stepedit_core.dataset.pair_rows import (
    ATTRIBUTE,
    SOURCE_CLIP_ID,
    SOURCE_ROW,
    neutral_is_clone,
    pair_rows,
    read_source,
)
from stepedit_core.dataset.scorers import SCORERS, Margin, Pair, make_scorer
from stepedit_core.edits import EditSpec, parse_edit
from stepedit_core.failures import ItemFailure, RunRefused
from stepedit_core.job import JobSpec
from stepedit_core.report.margins import SET_METADATA
from stepedit_core.store import RunStore

Attribute = Annotated[EditSpec, BeforeValidator(parse_edit), PlainSerializer(str, return_type=str)]
DEFAULT_MIN_MARGIN = 6.0
# input columns carried into the set as they are: rights first, then what a trainer reads
PASSED_PREFIXES = ("license", "consent")
PASSED_COLUMNS = ("text", "language", "speaker")


def dataset_dir(store: RunStore) -> str:
    return store.path("dataset")


def rows_path(store: RunStore) -> str:
    return store.path("dataset", "rows.parquet")


def sft_path(store: RunStore) -> str:
    return store.path("dataset", "sft.parquet")


def card_path(store: RunStore) -> str:
    return store.path("dataset", "README.md")


class MarginSpec(BaseModel):
    """A margin set: the source manifest, the attributes, the scorer and threshold, and the
    run that makes the versions (`job`: its manifest is RUN/dataset/rows.parquet)."""

    manifest_uri: str
    attributes: tuple[Attribute, ...] = Field(min_length=1)
    min_margin: float = Field(DEFAULT_MIN_MARGIN, ge=1, le=10)
    scorer: str = "objective"
    report: Literal["all", "index", "none"] = "index"  # review page media, as `stepedit run`
    job: JobSpec

    @model_validator(mode="after")
    def _check(self) -> MarginSpec:
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; available: {', '.join(SCORERS)}")
        names = [str(a) for a in self.attributes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"attribute(s) given twice: {', '.join(repeated)}")
        for attribute in self.attributes:
            if attribute.type == "clone":
                raise ValueError("clone makes the neutral version; it is not an attribute")
        if self.job.iterations != 1:
            raise ValueError("a margin set edits each pair once (iterations 1)")
        return self

    @classmethod
    def create(
        cls,
        manifest_uri: str,
        attributes: list[str | EditSpec],
        out: str,
        run_id: str,
        min_margin: float = DEFAULT_MIN_MARGIN,
        scorer: str = "objective",
        report: str = "index",
        **job: Any,
    ) -> MarginSpec:
        """The spec with its run: `job` takes JobSpec's fields (engine, models_dir, executor,
        seed, allow_roots, storage_options, overwrite...). Audio is read from the source
        manifest's folder unless `allow_roots` says otherwise."""
        store = RunStore(out, run_id)
        # the run's manifest is in RUN/dataset/: its default root would be that folder
        job["allow_roots"] = list(job.get("allow_roots") or [default_root(manifest_uri)])
        run = JobSpec(
            manifest_uri=store.uri(rows_path(store)),
            out=out,
            run_id=run_id,
            report="none",  # the page is built once the set is scored (it charts the margins)
            **job,
        )
        return cls(
            manifest_uri=manifest_uri,
            attributes=tuple(attributes),
            min_margin=min_margin,
            scorer=scorer,
            report=report,
            job=run,
        )

    def roots(self) -> AllowedRoots:
        return AllowedRoots.for_manifest(self.manifest_uri, self.job.allow_roots)


RunJob = Callable[[JobSpec], dict[str, Any]]


def check_scorer(spec: MarginSpec) -> None:
    """Refuse attributes the scorer can not score (RunRefused), before any work."""
    scorer = make_scorer(spec.scorer)
    problems = [p for a in spec.attributes if (p := scorer.refusal(a))]
    if problems:
        raise RunRefused("; ".join(problems))


def write_pair_rows(spec: MarginSpec) -> pa.Table:
    """Write RUN/dataset/rows.parquet, or check that an earlier attempt wrote the same rows
    (a run id resumes only the job it was started with)."""
    store = RunStore(spec.job.out, spec.job.run_id)
    table = pair_rows(read_source(spec.manifest_uri), spec.attributes, spec.job.engine)
    path = rows_path(store)
    if store.exists(path) and not spec.job.overwrite:
        earlier = store.read_table(path)
        if not earlier.equals(table):
            raise RunRefused(
                f"margin set {spec.job.run_id!r} under {spec.job.out} was started from another "
                "manifest or other attributes; pass --overwrite to start it afresh, or choose "
                "another --run-id"
            )
        return table
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    store.write_bytes(path, sink.getvalue())
    return table


def build_margin_set(
    spec: MarginSpec, run: RunJob | None = None, executor: Any = None
) -> dict[str, Any]:
    """Make (or resume) the margin set; returns its summary (also in the data card)."""
    with storage_options_installed(spec.job.storage_options, spec.job.storage_uris()):
        check_scorer(spec)
        write_pair_rows(spec)
        if run is None:
            from stepedit_core.run import run_job

            record = run_job(spec.job, executor=executor)
        else:
            record = run(spec.job)
        return write_margin_set(spec, record)


# --- pairing and scoring ---------------------------------------------------------------------

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
    "status",
    "instruction",
    "output_sha256",
    "record_sha256",
    "input_tokens",
    "output_tokens",
]


@dataclass
class Versions:
    """Where a row's two versions are and the records they came from."""

    neutral_uri: str | None = None
    edited_uri: str | None = None
    neutral: dict[str, Any] | None = None  # round-0 record (clone), None for the source
    edited: dict[str, Any] | None = None


def _records(store: RunStore, clone: bool) -> dict[tuple[int, int], dict[str, Any]]:
    """(row_index, iteration) -> record fields the set needs; the round-0 clone's FLAC too."""
    found: dict[tuple[int, int], dict[str, Any]] = {}
    columns = RECORD_COLUMNS + (["audio_flac"] if clone else [])
    for part in store.list(store.iterations_dir):
        table = store.read_table(part, columns=columns)
        for row in table.to_pylist():
            if row["iteration"] != 0:
                row.pop("audio_flac", None)  # the delivered file holds the edited audio
            found[(row["row_index"], row["iteration"])] = row
    return found


def _neutral_clone_uri(store: RunStore, clip_id: str, index: int, record: dict[str, Any]) -> str:
    """The round-0 clone as a file of the set: the record's own bytes, written every time (an
    earlier attempt's file may hold another clone)."""
    stem = posixpath.basename(store.audio_path(clip_id, index))
    path = store.path("dataset", "neutral", stem)
    store.write_bytes(path, record["audio_flac"])
    return store.uri(path)


def _passed_columns(names: list[str]) -> list[str]:
    rights = [n for n in names if n.lower().startswith(PASSED_PREFIXES)]
    return rights + [n for n in PASSED_COLUMNS if n in names and n not in rights]


def write_margin_set(spec: MarginSpec, record: dict[str, Any]) -> dict[str, Any]:
    store = RunStore(spec.job.out, spec.job.run_id)
    clone = neutral_is_clone(spec.job.engine)
    scorer = make_scorer(spec.scorer)
    roots = spec.roots()
    manifest = store.read_table(store.manifest)
    output = manifest.to_pylist()
    records = _records(store, clone)
    passed = _passed_columns(read_source(spec.manifest_uri).column_names)
    rows = []
    for index, row in enumerate(output):
        attribute = parse_edit(row[ATTRIBUTE])
        out = {
            "clip_id": row[SOURCE_CLIP_ID],
            "attribute": str(attribute),
            "run_id": spec.job.run_id,
            "pair_clip_id": row["clip_id"],
            "status": row["status"],
            "error_code": row["error_code"],
            "error": row["error"],
            "margin_scorer": scorer.name,
            "kept": False,
            **{name: row.get(name) for name in passed},
        }
        if row["status"] == "ok":
            _fill_pair(out, spec, scorer, roots, store, clone, row, index, records, attribute)
        rows.append(out)
    schema = SFT_SCHEMA
    for name in passed:  # with the manifest's own types (a consent flag may be a bool)
        schema = schema.append(manifest.schema.field(name))
    table = pa.Table.from_pylist(rows, schema)
    store.write_table(sft_path(store), table, {SET_METADATA: _spec_json(spec)})
    summary = card.summarize(table, spec, record)
    store.write_bytes(card_path(store), card.data_card(summary).encode())
    if spec.report != "none":
        from stepedit_core.report import build_report

        summary["report"] = build_report(spec.job.out, spec.job.run_id, media=spec.report)
    summary["sft"] = store.uri(sft_path(store))
    summary["card"] = store.uri(card_path(store))
    return summary


def _spec_json(spec: MarginSpec) -> str:
    return json.dumps(
        {
            "source_manifest": spec.manifest_uri,
            "attributes": [str(a) for a in spec.attributes],
            "min_margin": spec.min_margin,
            "scorer": spec.scorer,
            "engine": spec.job.engine,
        }
    )


def _fill_pair(
    out: dict[str, Any],
    spec: MarginSpec,
    scorer: Any,
    roots: AllowedRoots,
    store: RunStore,
    clone: bool,
    row: dict[str, Any],
    index: int,
    records: dict[tuple[int, int], dict[str, Any]],
    attribute: EditSpec,
) -> None:
    edited = records.get((index, 1))
    neutral = records.get((index, 0)) if clone else None
    if edited is None or (clone and neutral is None):
        out["status"], out["error"] = "failed", "the run's records of this pair are missing"
        return
    try:
        neutral_uri = (
            _neutral_clone_uri(store, row["clip_id"], index, neutral)
            if clone
            else roots.check(row["audio_uri"])
        )
        neutral_audio, neutral_bytes = audio_io.load(neutral_uri)
        edited_audio, edited_bytes = audio_io.load(row["output_uri"])
    except ItemFailure as exc:
        out["status"], out["error_code"], out["error"] = "failed", exc.code, str(exc)
        return
    margin: Margin = scorer.score(Pair(attribute, neutral_audio, edited_audio))
    out.update(
        instruction=edited.get("instruction") or str(attribute),
        neutral_uri=neutral_uri,
        edited_uri=row["output_uri"],
        neutral_sha256=audio_io.sha256_bytes(neutral_bytes),
        edited_sha256=audio_io.sha256_bytes(edited_bytes),
        margin=margin.value,
        kept=margin.value is not None and margin.value >= spec.min_margin,
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


__all__ = [
    "ATTRIBUTE",
    "SOURCE_ROW",
    "MarginSpec",
    "build_margin_set",
    "card_path",
    "dataset_dir",
    "sft_path",
]
