"""run.json: what a run was asked to do, with what, and what came of it."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import stepedit_core
from stepedit_core.audit import run_audit, write_sealed_run_json
from stepedit_core.catalog.manifest import MergeCounts
from stepedit_core.engines.base import Engine
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.checks import Validation
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.planning import Sharding
from stepedit_core.lifecycle.shard import ShardsOutcome


def write_run_record(
    job: JobSpec,
    engine: Engine,
    store: RunStore,
    validation: Validation,
    sharding: Sharding,
    counts: MergeCounts,
    outcome: ShardsOutcome,
    started: float,
    attempt: int,
) -> dict[str, Any]:
    """Write run.json. Its counts and `errors_by_code` are the merged manifest's, so the codes
    always add up to `counts.failed`. `clip_rounds` says how many clip-rounds earlier attempts
    of this run id had committed (resumed) and how many this attempt did."""
    ended = time.time()
    record = {
        "run_id": job.run_id,
        "package_version": stepedit_core.__version__,
        "engine": {"name": engine.name, "version": engine.version},
        "parameters": job.model_dump(mode="json"),
        "input_manifest": {
            "uri": job.manifest_uri,
            "sha256": validation.sha256,
            "rows": validation.rows,
        },
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "seconds": round(ended - started, 3),
        "counts": {
            "rows": counts.rows,
            "ok": counts.ok,
            "failed": counts.failed,
            "refused_at_plan": sharding.refused_rows,
            "reused": sharding.reused_rows,  # incremental: ok rows pointing at earlier outputs
            "shards": len(sharding.shards),
        },
        "errors_by_code": dict(counts.errors_by_code),
        "attempt": attempt,
        "clip_rounds": {
            "resumed": outcome.resumed_records,
            "done_now": outcome.records,
            "total": outcome.resumed_records + outcome.records,
        },
        "incremental": {
            "reused_rows": sharding.reused_rows,
            "sources_hashed": sharding.sources_hashed,
            "source_hashes_reused": sharding.source_hashes_reused,
        },
        "setups": dict(outcome.setups),
        "shards": [asdict(s) for s in outcome.summaries],
        "outputs": {
            "manifest": store.uri(store.manifest),
            "iterations": store.uri(store.iterations_dir),
            "report": store.uri(store.report_index) if job.report != "none" else None,
        },
    }
    record["audit"] = run_audit(store, validation.sha256)
    write_sealed_run_json(store, record)
    return record


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
