"""The steps of one run, in one place: validate -> plan -> one step per shard -> merge -> finish.

`RunSteps` builds the engine, the store and the executor once per run and exposes each step as
a method; `run_job` chains them. The Prefect flow runs the same `run_job`, handing it a task per
step (retries, logs, names), and the tests call it directly: there is no second copy of the chain.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from stepedit_core.access import AllowedRoots, storage_options_installed
from stepedit_core.checks import Validation, validate
from stepedit_core.engines import make_engine
from stepedit_core.executors import Executor, make_executor
from stepedit_core.job import JobSpec
from stepedit_core.manifest import MergeCounts, write_output_manifest
from stepedit_core.planning import Sharding, plan_shards
from stepedit_core.records import RowResult
from stepedit_core.run_record import write_run_record
from stepedit_core.shard import ShardSummary, run_shard
from stepedit_core.store import RunStore

Progress = Callable[[int, int, int], None]  # (clips done, clips in the shard, failed so far)
# step name -> a callable taking (steps, *args) that runs that step (e.g. a Prefect task)
StepWrappers = Mapping[str, Callable[..., Any]]


class RunSteps:
    """One run's steps, sharing one engine, one store and one executor."""

    def __init__(self, job: JobSpec, executor: Executor | None = None) -> None:
        self.job = job
        self.engine = make_engine(job.engine, job.engine_options())
        self.store = RunStore(job.out, job.run_id)
        self._executor = executor
        self.started = time.time()

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = make_executor(self.job.executor, self.job.ray_address)
        return self._executor

    def validate(self) -> Validation:
        return validate(self.job.manifest_uri, self.job.edits, self.engine, self.store)

    def plan(self) -> Sharding:
        job = self.job
        roots = AllowedRoots.for_manifest(job.manifest_uri, job.allow_roots)
        return plan_shards(
            self.store, job.manifest_uri, job.edits, self.engine, job.seed, job.shard_size, roots
        )

    def run_shard(self, shard: int, progress: Progress | None = None) -> ShardSummary:
        job = self.job
        return run_shard(
            self.store,
            self.engine,
            self.executor,
            shard,
            job.iterations,
            job.prompt_mode,
            progress,
        )

    def merge(self) -> MergeCounts:
        """Join plan refusals and shard results onto the input manifest, in input order."""
        store = self.store
        tables = [store.read_table(p) for p in store.list(store.results_dir())]
        schema = RowResult.SCHEMA
        results = (
            pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()
        )
        sink = io.BytesIO()
        counts = write_output_manifest(self.job.manifest_uri, results, sink)
        store.write_bytes(store.manifest, sink.getvalue())
        return counts

    def finish(
        self,
        validation: Validation,
        sharding: Sharding,
        counts: MergeCounts,
        shards: list[ShardSummary],
    ) -> dict[str, Any]:
        """Write run.json and return it."""
        return write_run_record(
            self.job,
            self.engine,
            self.store,
            validation,
            sharding,
            counts,
            self.started,
            shards,
        )


def run_job(
    job: JobSpec, executor: Executor | None = None, wrappers: StepWrappers | None = None
) -> dict[str, Any]:
    """Run every step of a job; returns the run record (also written to run.json).

    `wrappers` maps a step name (validate, plan, run_shard, merge, finish) to a callable taking
    `(steps, *args)`, so an orchestrator can wrap a step without rewriting the chain. The job's
    storage options are fsspec's defaults while it runs (see `stepedit_core.access`)."""
    with storage_options_installed(job.storage_options, job.storage_uris()):
        return _run_steps(RunSteps(job, executor), wrappers or {})


def _run_steps(steps: RunSteps, wrappers: StepWrappers) -> dict[str, Any]:
    def step(name: str, *args: Any) -> Any:
        wrapper = wrappers.get(name)
        return wrapper(steps, *args) if wrapper else getattr(steps, name)(*args)

    validation = step("validate")
    sharding = step("plan")
    # Shards run one after another: each already spreads over the whole executor, and
    # sequential shards keep the driver's memory to one shard's results at a time.
    shards = [step("run_shard", shard) for shard in sharding.shards]
    counts = step("merge")
    return step("finish", validation, sharding, counts, shards)
