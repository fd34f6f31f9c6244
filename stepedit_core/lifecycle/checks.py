"""Everything that refuses a whole run, checked before any work starts.

`stepedit run`, `stepedit validate` and the flow's first task all call `check_inputs`, so a job
is refused for the same reasons wherever it starts. Only the manifest's footer is read here; the
rows are checked one by one while planning.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass

import pyarrow.parquet as pq

from stepedit_core.catalog.manifest import ManifestError, check_schema, file_sha256, open_parquet
from stepedit_core.engines.base import Engine
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.foundation.failures import ItemFailure, RunRefused
from stepedit_core.foundation.store import RunStore
from stepedit_core.words.asr import check_asr_folder


@dataclass
class Validation:
    """The input manifest as the run record describes it."""

    rows: int
    columns: list[str]
    sha256: str


def check_inputs(
    manifest_uri: str,
    job_chain: tuple[EditSpec, ...],
    engine: Engine,
    store: RunStore | None = None,
) -> pq.ParquetFile:
    """Refuse the run (RunRefused: ManifestError, EngineNotReady, ...) when it can not start:
    a bad manifest, no edit at all, a job-level edit the engine can not run, an engine that can
    not run here, an ASR folder that is missing or incomplete, an output folder that can not be
    written."""
    parquet = open_parquet(manifest_uri)
    schema = parquet.schema_arrow
    check_schema(schema, manifest_uri)
    if not job_chain and "edit" not in schema.names:
        raise ManifestError("no edit given: pass --edit or add an 'edit' column to the manifest")
    for spec in job_chain:
        try:
            engine.check_edit(spec)
        except ItemFailure as exc:  # the same message a row would get, for the whole job
            raise RunRefused(f"--edit {spec}: {exc}") from None
    engine.check_ready()
    check_asr_folder(engine.options.asr_models)
    if store is not None:
        check_writable(store)
    return parquet


def check_writable(store: RunStore) -> None:
    """Write and remove a probe object under the run folder, so an output that can not be
    written refuses the run up front instead of failing after the first shard."""
    probe = posixpath.join(store.root, f".write-probe-{uuid.uuid4().hex}")
    try:
        store.write_bytes(probe, b"")
        store.fs.rm(probe)
    except (OSError, ValueError) as exc:
        raise RunRefused(
            f"output {store.uri(store.root)} can not be written: {type(exc).__name__}: {exc}"
        ) from None


def validate(
    manifest_uri: str, job_chain: tuple[EditSpec, ...], engine: Engine, store: RunStore
) -> Validation:
    """`check_inputs`, plus the manifest's size and sha256 for the run record."""
    parquet = check_inputs(manifest_uri, job_chain, engine, store)
    return Validation(
        rows=parquet.metadata.num_rows,
        columns=list(parquet.schema_arrow.names),
        sha256=file_sha256(manifest_uri),
    )
