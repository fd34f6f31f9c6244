"""Run-level steps around the shards: refuse bad jobs, plan shards, merge, write run.json."""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import stepedit_core
from stepedit_core import audit
from stepedit_core.edits import EditSpec
from stepedit_core.engines import Engine, make_engine
from stepedit_core.job import JobSpec
from stepedit_core.manifest import (
    PLAN_SCHEMA,
    RESULT_SCHEMA,
    ManifestError,
    check_schema,
    file_sha256,
    merge_output,
    open_parquet,
    plan_rows,
)
from stepedit_core.store import RunStore


@dataclass
class Validation:
    rows: int
    columns: list[str]
    sha256: str


def check_inputs(
    manifest_uri: str, job_chain: tuple[EditSpec, ...], engine: Engine
) -> pq.ParquetFile:
    """Everything that refuses the whole run, checked before any work starts (the manifest's
    schema, that some edit is given, that the engine can run here). Reads only the footer.

    Raises ManifestError (bad manifest) or EngineNotReady (engine can not run here)."""
    parquet = open_parquet(manifest_uri)
    schema = parquet.schema_arrow
    check_schema(schema, manifest_uri)
    if not job_chain and "edit" not in schema.names:
        raise ManifestError("no edit given: pass --edit or add an 'edit' column to the manifest")
    engine.check_ready()
    return parquet


def validate_job(job: JobSpec) -> Validation:
    """`check_inputs` for a job, plus the manifest's size and sha256 for the run record."""
    engine = make_engine(job.engine, job.engine_options())
    parquet = check_inputs(job.manifest_uri, job.edit_chain, engine)
    return Validation(
        rows=parquet.metadata.num_rows,
        columns=list(parquet.schema_arrow.names),
        sha256=file_sha256(job.manifest_uri),
    )


@dataclass
class Plan:
    shards: list[int] = field(default_factory=list)
    planned_rows: int = 0
    refused_rows: int = 0
    refused_by_code: dict[str, int] = field(default_factory=dict)


def plan_run(job: JobSpec) -> Plan:
    """Check every row against the engine, write shard plans and the refused rows' records."""
    store = RunStore(job.out, job.run_id)
    engine = make_engine(job.engine, job.engine_options())
    store.clear_outputs()  # an interrupted earlier attempt of this run id must not leak in
    plan = Plan()
    work: list[dict] = []
    failures: list[dict] = []
    for row, failure in plan_rows(job.manifest_uri, job.edit_chain, engine, job.seed):
        if failure is not None:
            failures.append(failure)
            code = failure["error_code"]
            plan.refused_by_code[code] = plan.refused_by_code.get(code, 0) + 1
            continue
        work.append(row)
        if len(work) == job.shard_size:
            _write_shard(store, plan, work)
            work = []
    if work:
        _write_shard(store, plan, work)
    plan.refused_rows = len(failures)
    store.write_table(store.plan_failures(), pa.Table.from_pylist(failures, RESULT_SCHEMA))
    return plan


def _write_shard(store: RunStore, plan: Plan, rows: list[dict]) -> None:
    shard = len(plan.shards)
    store.write_table(store.shard_plan(shard), pa.Table.from_pylist(rows, PLAN_SCHEMA))
    plan.shards.append(shard)
    plan.planned_rows += len(rows)


def merge_run(job: JobSpec) -> dict[str, int]:
    """Join plan failures and shard results onto the input manifest, in input order."""
    store = RunStore(job.out, job.run_id)
    tables = [store.read_table(p) for p in store.list(store.results_dir())]
    results = (
        pa.concat_tables([t.cast(RESULT_SCHEMA) for t in tables])
        if tables
        else RESULT_SCHEMA.empty_table()
    )
    sink = io.BytesIO()
    counts = merge_output(job.manifest_uri, results, sink)
    store.write_bytes(store.manifest, sink.getvalue())
    return counts


def write_run_record(
    job: JobSpec,
    validation: Validation,
    plan: Plan,
    counts: dict[str, int],
    started: float,
    shards: list[dict[str, Any]],
) -> dict[str, Any]:
    store = RunStore(job.out, job.run_id)
    engine = make_engine(job.engine, job.engine_options())
    ended = time.time()
    record = {
        "run_id": job.run_id,
        "package_version": stepedit_core.__version__,
        "engine": {"name": engine.name, "version": engine.version},
        "parameters": job.model_dump(),
        "input_manifest": {
            "uri": job.manifest_uri,
            "sha256": validation.sha256,
            "rows": validation.rows,
        },
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "seconds": round(ended - started, 3),
        "counts": {
            "rows": counts.get("rows", 0),
            "ok": counts.get("ok", 0),
            "failed": counts.get("failed", 0),
            "refused_at_plan": plan.refused_rows,
            "shards": len(plan.shards),
        },
        "errors_by_code": _error_counts(plan, shards),
        "shards": shards,
        "outputs": {
            "manifest": store.uri(store.manifest),
            "iterations": store.uri(store.iterations_dir),
        },
    }
    record["audit"] = audit.run_audit(store, validation.sha256)
    audit.write_sealed_run_json(store, record)
    return record


def _error_counts(plan: Plan, shards: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict(plan.refused_by_code)
    for shard in shards:
        for code, n in shard.get("errors", {}).items():
            counts[code] = counts.get(code, 0) + n
    return dict(sorted(counts.items()))


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def summary_dict(summary: object) -> dict[str, Any]:
    return asdict(summary)  # type: ignore[arg-type]
