"""The steps of one run, in one place: validate -> plan -> run shards -> merge -> finish.

`RunSteps` builds the engine, the store and the executor once per run and exposes each step as
a method; `run_job` chains them under the run id's lease. The Prefect flow runs the same
`run_job`, handing it a task per step (retries, logs, names), and the tests call it directly:
there is no second copy of the chain.

Runs are durable: every step can be repeated after a crash. Planning reads back a finished plan,
running skips what committed parts hold (see shard.py), merging and finishing rewrite their
objects whole. A rerun of a finished run id does no work; `overwrite` starts it afresh.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from stepedit_core.catalog.access import AllowedRoots, storage_options_installed
from stepedit_core.catalog.manifest import MergeCounts, write_output_manifest
from stepedit_core.catalog.records import RowResult
from stepedit_core.engines import make_engine
from stepedit_core.executors import Executor, make_executor
from stepedit_core.foundation.failpoints import failpoint
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.store import RunStore
from stepedit_core.judges.stage import RoundJudging
from stepedit_core.judges.targets import manifest_targets
from stepedit_core.lifecycle import early_setup
from stepedit_core.lifecycle.checks import Validation, validate
from stepedit_core.lifecycle.incremental import Reuse, write_finished
from stepedit_core.lifecycle.integrity import check_deliveries
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.lease import Lease
from stepedit_core.lifecycle.ownership import check_run_folder, mark_run_folder
from stepedit_core.lifecycle.planning import Sharding, plan_shards
from stepedit_core.lifecycle.progress import run_progress
from stepedit_core.lifecycle.run_record import write_run_record
from stepedit_core.lifecycle.shard import Progress, ShardsOutcome, run_shards

log = logging.getLogger(__name__)

# step name -> a callable taking (steps, *args) that runs that step (e.g. a Prefect task)
StepWrappers = Mapping[str, Callable[..., Any]]


class RunSteps:
    """One run's steps, sharing one engine, one store and one executor."""

    def __init__(
        self, job: JobSpec, executor: Executor | None = None, progress: Progress | None = None
    ) -> None:
        self.job = job
        # an in-process run whose models are being set up already (early_setup.py) takes over
        # that engine and executor
        early = early_setup.take(job) if executor is None else None
        self.engine = early.engine if early else make_engine(job.engine, job.engine_options())
        self.store = RunStore(job.out, job.run_id)
        self._executor: Executor | None = early.executor if early else executor
        self.progress = progress or run_progress().update
        self.started = time.time()
        self.attempt = 1

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            job = self.job
            self._executor = make_executor(job.executor, job.ray_address, job.stage_envs())
        return self._executor

    def finished_record(self) -> dict[str, Any] | None:
        """run.json of this run id when it already finished (and is not to be overwritten)."""
        if self.job.overwrite or not run_finished(self.store, self.job.report):
            return None
        return self.store.read_json(self.store.run_json)

    def validate(self) -> Validation:
        job = self.job
        # before anything is written under the run folder (validate writes a probe)
        check_run_folder(self.store, job.manifest_uri, job.allow_roots)
        validation = validate(job.manifest_uri, job.edits, self.engine, self.store)
        # a model judge with nothing to judge refuses the run here; the targets are kept
        _ = self.round_judging
        return validation

    def begin(self, validation: Validation) -> int:
        """Start afresh (`overwrite`) or check that this attempt resumes the same job; returns
        the attempt's number."""
        store, job = self.store, self.job
        fingerprint = {**job.fingerprint(), "manifest_sha256": validation.sha256}
        earlier: dict[str, Any] = {}
        mark_run_folder(store)
        store.remove_temporaries()  # left by a crashed attempt's writes
        if job.overwrite:
            store.clear_outputs()
        elif store.exists(store.job_json):
            earlier = store.read_json(store.job_json)
            before = earlier.get("fingerprint", {})
            changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
            if changed:
                raise RunRefused(
                    f"run {job.run_id!r} under {job.out} was started with other "
                    f"{', '.join(changed)}; resume it with the same job, pass --overwrite to "
                    "start it afresh, or choose another --run-id"
                )
        self.attempt = int(earlier.get("attempts", 0)) + 1
        # where earlier attempts were stopped stays on record; the marker is for the last stop
        stops = list(earlier.get("stops", []))
        if store.exists(store.stopped):
            stops.append(store.read_json(store.stopped))
        store.write_json(
            store.job_json,
            {
                "fingerprint": fingerprint,
                "attempts": self.attempt,
                "first_started": earlier.get("first_started", self.started),
                "stops": stops,
                # what integrity.py moved aside or wrote again, attempt after attempt
                **{k: earlier[k] for k in ("quarantined", "redelivered") if k in earlier},
            },
        )
        if store.exists(store.stopped):
            store.remove([store.stopped])
        return self.attempt

    def plan(self) -> Sharding:
        job = self.job
        roots = AllowedRoots.for_manifest(job.manifest_uri, job.allow_roots)
        # the earlier runs' index is read only when this run is planned now, not read back
        planning = job.incremental and not self.store.exists(self.store.plan_done)
        reuse = Reuse(job, self.engine) if planning else None
        return plan_shards(
            self.store,
            job.manifest_uri,
            job.edits,
            self.engine,
            job.seed,
            job.shard_size,
            roots,
            reuse,
            job.input_limits(),
        )

    def run_shards(self, shards: list[int], progress: Progress | None = None) -> ShardsOutcome:
        """`progress` replaces the run's own reporter for this call (a wrapper may add to it)."""
        job = self.job
        return run_shards(
            self.store,
            self.engine,
            self.executor,
            shards,
            job.iterations,
            job.prompt_mode,
            progress or self.progress,
            job.qc_plan(),
            self.round_judging,
            job.input_limits(),
        )

    @functools.cached_property
    def round_judging(self) -> RoundJudging | None:
        """How rounds are judged as they are made (`--judge`): the judge and each row's target
        from the manifest's eval_task and eval_label (read once, at validation)."""
        job = self.job
        if job.judge is None:
            return None
        targets, skipped = manifest_targets(job.manifest_uri)
        if job.judge.kind != "objective" and not targets:
            raise RunRefused(
                f"--judge {job.judge.kind}: no row of {job.manifest_uri} has both eval_task and "
                "eval_label, so no round could be judged" + (f" ({skipped[0]})" if skipped else "")
            )
        for note in skipped:
            log.warning("not judged: %s", note)
        return RoundJudging(job.judge.judge(job.out), targets, job.until_judged)

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
        store.check_fence()
        store.write_bytes(store.manifest, sink.getvalue())
        failpoint("merge.manifest_written")
        return counts

    def finish(
        self,
        validation: Validation,
        sharding: Sharding,
        counts: MergeCounts,
        outcome: ShardsOutcome,
    ) -> dict[str, Any]:
        """Record this run's ok clips in the output root's index (what later incremental runs
        look up), then write run.json and return it. The index is written first: one whose
        run.json is missing is ignored by the lookup."""
        self.store.check_fence()
        check_deliveries(self.store, self.job.qc_plan())  # delivered files match their records
        write_finished(self.store, self.job, self.engine)
        return write_run_record(
            self.job,
            self.engine,
            self.store,
            validation,
            sharding,
            counts,
            outcome,
            self.started,
            self.attempt,
        )

    def report(self) -> str | None:
        """Build the review page (RUN/report/index.html); returns its URI."""
        if self.job.report == "none":
            return None
        from stepedit_core.report import build_report

        return build_report(self.job.out, self.job.run_id, media=self.job.report)


def run_finished(store: RunStore, report: str) -> bool:
    """A run is finished once run.json is written and, when it has a review page, the page is
    complete (report.json is its last object): a page that failed is built by the next rerun."""
    if not store.exists(store.run_json):
        return False
    return report == "none" or store.exists(store.report_summary)


def run_job(
    job: JobSpec,
    executor: Executor | None = None,
    wrappers: StepWrappers | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run (or resume) every step of a job; returns the run record (also in run.json).

    `wrappers` maps a step name (validate, begin, plan, run_shards, merge, finish, report) to a
    callable taking `(steps, *args)`, so an orchestrator can wrap a step without rewriting the
    chain.
    A finished run id returns its record with `"nothing_to_do": True` and runs nothing. The
    job's storage options are fsspec's defaults while it runs (see
    `stepedit_core.catalog.access`)."""
    with storage_options_installed(job.storage_options, job.storage_uris()):
        return _run_steps(RunSteps(job, executor, progress), wrappers or {})


def _run_steps(steps: RunSteps, wrappers: StepWrappers) -> dict[str, Any]:
    def step(name: str, *args: Any) -> Any:
        wrapper = wrappers.get(name)
        return wrapper(steps, *args) if wrapper else getattr(steps, name)(*args)

    finished = steps.finished_record()
    if finished is not None:
        return {**finished, "nothing_to_do": True}
    validation = step("validate")
    with Lease(steps.store):
        step("begin", validation)
        sharding = step("plan")
        outcome = step("run_shards", sharding.shards)
        counts = step("merge")
        record = step("finish", validation, sharding, counts, outcome)
        step("report")
        return record
