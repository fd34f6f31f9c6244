"""Run one planned shard: items through an executor, records and audio committed to the store.

A shard is thousands of clips, the unit Prefect retries. Rerunning a shard first clears the
part files an earlier attempt left, so a retry never leaves duplicate records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from stepedit_core.engines.base import Engine
from stepedit_core.executors import Executor
from stepedit_core.records import PlanRow, RoundRecord, RowResult, table_of
from stepedit_core.rounds import build_stages, has_clone
from stepedit_core.stages import WorkItem
from stepedit_core.store import RunStore

RECORDS_PER_PART = 256  # clip-rounds per iterations part file: few, large objects on S3


@dataclass
class ShardSummary:
    """How one shard went (timings and sizes; failures are counted once, at merge)."""

    shard: int
    items: int = 0
    ok: int = 0
    failed: int = 0
    records: int = 0
    parts: int = 0
    seconds: float = 0.0
    first_done_s: float | None = None


def load_items(store: RunStore, shard: int) -> list[WorkItem]:
    table = store.read_table(store.shard_plan(shard))
    return [PlanRow.from_row(row).work_item() for row in table.to_pylist()]


def run_shard(
    store: RunStore,
    engine: Engine,
    executor: Executor,
    shard: int,
    rounds: int,
    prompt_mode: str = "chain",
    progress: Callable[[int, int, int], None] | None = None,
) -> ShardSummary:
    started = time.perf_counter()
    items = load_items(store, shard)
    summary = ShardSummary(shard=shard, items=len(items))
    store.remove(store.list(store.iterations_dir, prefix=f"shard-{shard:05d}-"))
    with_clone = any(has_clone(item.edits) for item in items)
    stages = build_stages(engine, rounds, with_clone, prompt_mode)

    records: list[RoundRecord] = []
    results: list[RowResult] = []
    for item in executor.run(stages, items):
        if summary.first_done_s is None:
            summary.first_done_s = time.perf_counter() - started
        results.append(_finish(store, item, summary))
        records.extend(item.records)
        if len(records) >= RECORDS_PER_PART:
            _write_part(store, shard, summary, records[:RECORDS_PER_PART])
            records = records[RECORDS_PER_PART:]
        if progress is not None:
            progress(len(results), len(items), summary.failed)
    if records:
        _write_part(store, shard, summary, records)
    done = {r.row_index for r in results}
    for item in items:  # an executor must hand back every item it was given
        if item.row_index not in done:
            summary.failed += 1
            results.append(
                RowResult.failed(
                    item.row_index,
                    item.clip_id,
                    "lost_item",
                    f"row {item.row_index}: item did not come back from the executor",
                )
            )
    store.write_table(store.shard_results(shard), table_of(results, RowResult.SCHEMA))
    summary.seconds = time.perf_counter() - started
    return summary


def _finish(store: RunStore, item: WorkItem, summary: ShardSummary) -> RowResult:
    rounds_done = sum(1 for r in item.records if r.ok)
    if not item.failed and item.audio is None:
        item.fail("no_output", "no round produced audio")
    if item.failed:
        summary.failed += 1
        return RowResult.failed(
            item.row_index, item.clip_id, str(item.error_code), str(item.error), rounds_done
        )
    path = store.audio_path(item.clip_id, item.row_index)
    last = item.records[-1] if item.records else None
    # the last round's FLAC is the final audio: same bytes, so the file's sha256 is that
    # round's output_sha256 and the audit chain ends at the delivered file
    flac = last.audio_flac if last is not None and last.audio_flac else None
    if flac is None:
        from stepedit_core import audio as audio_io

        flac = audio_io.encode_flac(item.audio)
    store.write_bytes(path, flac)
    summary.ok += 1
    return RowResult.ok(item.row_index, item.clip_id, store.uri(path), rounds_done)


def _write_part(
    store: RunStore, shard: int, summary: ShardSummary, records: list[RoundRecord]
) -> None:
    store.write_table(
        store.iteration_part(shard, summary.parts), table_of(records, RoundRecord.SCHEMA)
    )
    summary.parts += 1
    summary.records += len(records)
