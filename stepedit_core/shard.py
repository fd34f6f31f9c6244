"""Run one planned shard: items through an executor, records and audio committed to the store.

A shard is thousands of clips, the unit Prefect retries. Rerunning a shard first clears the
part files an earlier attempt left, so a retry never leaves duplicate records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from stepedit_core import audio as audio_io
from stepedit_core.edits import parse_chain
from stepedit_core.engines import make_engine
from stepedit_core.job import JobSpec
from stepedit_core.manifest import RESULT_SCHEMA
from stepedit_core.rounds import build_stages, has_clone
from stepedit_core.stages import Stage, WorkItem
from stepedit_core.store import RunStore

RECORDS_PER_PART = 256  # clip-rounds per iterations part file: few, large objects on S3

ITERATION_SCHEMA = pa.schema(
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
        ("input_tokens", pa.list_(pa.int32())),
        ("output_tokens", pa.list_(pa.int32())),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("duration_in_s", pa.float64()),
        ("duration_s", pa.float64()),
        ("peak_dbfs", pa.float64()),
        ("rms_dbfs", pa.float64()),
        ("clipped_samples", pa.int64()),
        ("audio_flac", pa.binary()),
    ]
)


class Executor(Protocol):
    name: str

    def run(self, stages: list[Stage], items: Any) -> Iterator[WorkItem]: ...


def make_executor(
    name: str, ray_address: str | None = None, stage_envs: dict[str, Any] | None = None
) -> Executor:
    if name == "local":
        from stepedit_core.executors.local import LocalExecutor

        if stage_envs:
            raise ValueError("stage environments need the ray executor")
        return LocalExecutor()
    if name == "ray":
        from stepedit_core.executors.ray_data import RayDataExecutor

        return RayDataExecutor(address=ray_address, stage_envs=stage_envs)
    raise ValueError(f"unknown executor {name!r}; expected 'ray' or 'local'")


@dataclass
class ShardSummary:
    shard: int
    items: int = 0
    ok: int = 0
    failed: int = 0
    records: int = 0
    parts: int = 0
    seconds: float = 0.0
    first_done_s: float | None = None
    errors: dict[str, int] = field(default_factory=dict)


def load_items(store: RunStore, shard: int) -> list[WorkItem]:
    table = store.read_table(store.shard_plan(shard))
    return [
        WorkItem(
            row_index=row["row_index"],
            clip_id=row["clip_id"],
            audio_uri=row["audio_uri"],
            edits=parse_chain(row["edit"]),
            text=row["text"],
            target_text=row["target_text"],
            language=row["language"],
            speaker=row["speaker"],
            seed=row["seed"],
        )
        for row in table.to_pylist()
    ]


def run_shard(
    job: JobSpec,
    shard: int,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ShardSummary:
    started = time.perf_counter()
    store = RunStore(job.out, job.run_id)
    engine = make_engine(job.engine, job.engine_options())
    items = load_items(store, shard)
    summary = ShardSummary(shard=shard, items=len(items))
    store.remove(store.list(store.iterations_dir, prefix=f"shard-{shard:05d}-"))
    stages = build_stages(engine, job.iterations, any(has_clone(i) for i in items), job.prompt_mode)
    executor = executor or make_executor(job.executor, job.ray_address, job.stage_envs())

    records: list[dict] = []
    results: list[dict] = []
    for item in executor.run(stages, items):
        if summary.first_done_s is None:
            summary.first_done_s = time.perf_counter() - started
        results.append(_finish(store, item, summary))
        records.extend(item.records)
        if len(records) >= RECORDS_PER_PART:
            _write_part(store, shard, summary, records[:RECORDS_PER_PART])
            records = records[RECORDS_PER_PART:]
        if progress is not None:
            progress(len(results), len(items))
    if records:
        _write_part(store, shard, summary, records)
    if len(results) != len(items):  # an executor must hand back every item it was given
        done = {r["row_index"] for r in results}
        for item in items:
            if item.row_index not in done:
                results.append(
                    _result(
                        item,
                        "failed",
                        None,
                        "lost_item",
                        "item did not come back from the executor",
                    )
                )
    store.write_table(store.shard_results(shard), pa.Table.from_pylist(results, RESULT_SCHEMA))
    summary.seconds = time.perf_counter() - started
    return summary


def _finish(store: RunStore, item: WorkItem, summary: ShardSummary) -> dict:
    done = sum(1 for r in item.records if r["status"] == "ok")
    if item.failed:
        summary.failed += 1
        code = item.error_code or "error"
        summary.errors[code] = summary.errors.get(code, 0) + 1
        return _result(item, "failed", None, item.error_code, item.error, done)
    if item.audio is None:
        summary.failed += 1
        return _result(item, "failed", None, "no_output", "no round produced audio", done)
    path = store.audio_path(item.clip_id, item.row_index)
    last = item.records[-1] if item.records else None
    # the last round's FLAC is the final audio: same bytes, so the file's sha256 is that
    # round's output_sha256 and the audit chain ends at the delivered file
    flac = last["audio_flac"] if last and last["audio_flac"] else audio_io.encode_flac(item.audio)
    store.write_bytes(path, flac)
    summary.ok += 1
    return _result(item, "ok", store.uri(path), None, None, done)


def _result(
    item: WorkItem,
    status: str,
    uri: str | None,
    code: str | None,
    error: str | None,
    done: int = 0,
) -> dict:
    return {
        "row_index": item.row_index,
        "clip_id": item.clip_id,
        "status": status,
        "output_uri": uri,
        "error": error,
        "error_code": code,
        "iterations_done": done,
    }


def _write_part(store: RunStore, shard: int, summary: ShardSummary, records: list[dict]) -> None:
    table = pa.Table.from_pylist(records, ITERATION_SCHEMA)
    store.write_table(store.iteration_part(shard, summary.parts), table)
    summary.parts += 1
    summary.records += len(records)
