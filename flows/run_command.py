"""Running a flow from the command line: the checks that refuse a job before Prefect starts,
the session every flow runs in (reaper, log file, stops, progress, Prefect server) and the
summary printed at the end. Used by `run`, `demo`, `eval run` and `dataset margin`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator

from stepedit_core.catalog.access import AllowedRoots
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows import local_ray, local_server
from stepedit_flows.exit_statuses import Refused, exit_status
from stepedit_flows.run_logs import run_log


def use_local_server() -> None:
    """Point this process at the local Prefect server, starting one when none runs (see
    local_server.py); before Prefect is imported. It comes up while the run checks its job."""
    try:
        local_server.use_for_this_run()
    except (RuntimeError, ValueError) as exc:
        raise Refused(str(exc)) from None


def check_before_run(job: JobSpec) -> bool:
    """Refuse before Prefect starts; the flow checks again (it may run without this CLI) and
    hashes the manifest once for the run record. False when the run already finished."""
    from stepedit_core.foundation.store import RunStore
    from stepedit_core.lifecycle.checks import check_inputs
    from stepedit_core.lifecycle.lease import holder_problem
    from stepedit_core.lifecycle.ownership import check_run_folder
    from stepedit_core.lifecycle.rounds import model_stage_names
    from stepedit_core.lifecycle.run import run_finished
    from stepedit_core.lifecycle.stage_envs import check_stage_names

    try:
        store = RunStore(job.out, job.run_id)
        finished = run_finished(store, job.report)
    except (OSError, ValueError) as exc:
        raise Refused(f"output {job.out} can not be used: {type(exc).__name__}: {exc}") from None
    if finished and not job.overwrite:
        return False
    busy = holder_problem(store)
    if busy is not None:
        raise Refused(busy)
    engine = job.make_engine()
    check_run_folder(store, job.manifest_uri, job.allow_roots)  # before the write probe
    check_inputs(job.manifest_uri, job.edits, engine, store)
    check_stage_names(job.stage_envs(), model_stage_names(engine))
    refuse_when_every_row_would_be(job, engine)
    return True


def refuse_when_every_row_would_be(job: JobSpec, engine: object) -> None:
    """A job whose rows would all be refused at plan time for one reason would only write
    failure records: refuse it whole, saying what would fix it."""
    from stepedit_core.lifecycle.planning import refusal_of_every_row

    try:
        roots = AllowedRoots.for_manifest(job.manifest_uri, job.allow_roots)
    except ValueError as exc:
        raise Refused(f"--allow-root: {exc}") from None
    problem = refusal_of_every_row(job.manifest_uri, job.edits, engine, roots)
    if problem is not None:
        raise Refused(problem)


class _NoThreadNotice(logging.Filter):
    """Ray notes that it sets no SIGTERM handler when started off the main thread: the run
    keeps its own handlers in any case (see stepedit_core.lifecycle.stops.keep_signal_handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def use_shared_ray(job: JobSpec) -> dict | None:
    """For a job on the Ray executor that names no cluster: find the shared local Ray cluster
    or start one (see local_ray.py), before the run's reaper starts (the cluster is not the
    run's to stop). Returns its state, or None when the run starts a Ray of its own or joins
    a named cluster."""
    if job.executor != "ray":
        return None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a second flow in this process
        return None
    try:
        if not local_ray.wanted(job.ray_address):
            return None
        state = local_ray.use_for_this_run()
    except (RuntimeError, ValueError) as exc:
        raise Refused(str(exc)) from None
    local_ray.join_environment(state)  # the executor joins it too, should it connect first
    return state


_SHELL_ONLY = frozenset({"PWD", "OLDPWD", "SHLVL", "_"})


def worker_env() -> dict[str, str]:
    """The run's environment for its workers on the shared cluster, as the workers of a Ray the
    run starts itself inherit it; Ray's own variables (`RAY_*`) describe each process and stay
    Ray's, and the shell's bookkeeping stays out."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("RAY_") and key not in _SHELL_ONLY
    }


def start_ray_early(job: JobSpec, shared: dict | None = None) -> threading.Thread | None:
    """Start or join Ray for a job on the Ray executor in a background thread, so its seconds of
    start-up overlap Prefect's import, the flow's start and validation and planning; the
    executor's own `ensure_ray` then waits for this start instead of beginning another. With
    `shared` (the state `use_shared_ray` returned) the thread waits until that cluster is up and
    joins it. A start that fails here is tried again by the executor, which reports the error."""
    if job.executor != "ray":
        return None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():  # a second flow in this process
        return None
    from stepedit_core.executors.ray_data import ensure_ray

    logging.getLogger("ray._private.worker").addFilter(_NoThreadNotice())

    def start() -> None:
        with contextlib.suppress(Exception):
            if shared is None:
                ensure_ray(job.ray_address)
            else:
                ensure_ray(worker_env=worker_env(), wait=lambda: local_ray.wait_until_ready(shared))
        # Ray's processes die with the thread that started them (the parent-death signal is
        # per thread on Linux): this one lives as long as the run's process
        threading.Event().wait()

    thread = threading.Thread(target=start, name="stepedit-ray-start", daemon=True)
    thread.start()
    return thread


RAY_STOP_GRACE_S = 1.0  # how long a local Ray's processes get to exit before they are killed


def stop_local_ray(grace: float = RAY_STOP_GRACE_S) -> None:
    """Shut down this process's Ray before it exits. Ray's own exit hook pauses half a second,
    then stops a local cluster's processes one after another, up to a second each; here the
    driver disconnects, then every process of a cluster this process started (and their
    workers and agents) is terminated at once, waited for together and killed after `grace`.
    A cluster the run only joined (`--ray-address`) keeps running."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    import psutil
    import ray._private.worker as ray_worker

    from stepedit_core.lifecycle.reaper import reap

    node = ray_worker._global_node
    # ray.shutdown() disconnects only; this process stops the node's processes below
    ray_worker._global_node = None
    ray.shutdown()
    if node is None or not node.is_head():
        return
    node.destroy_external_storage()  # spilled objects, as Ray's own shutdown removes them
    started = [info.process.pid for infos in node.all_processes.values() for info in infos]
    known = {}
    for pid in started:
        with contextlib.suppress(psutil.Error):
            known[pid] = psutil.Process(pid).create_time()
    reap(known, grace)


@contextlib.contextmanager
def flow_session(job: JobSpec, quiet: bool, set_up_early: bool = False) -> Iterator[str]:
    """What every flow started from the command line runs inside: the reaper, the run's log
    file (yielded), clean stops on signals, progress on the terminal, and the Prefect server
    (the local one `use_local_server` chose, once it answers, or a temporary one). With
    `set_up_early`, the flow runs `job` itself: an in-process run's models start loading now,
    in the background (stepedit_core.lifecycle.early_setup)."""
    from stepedit_core.foundation.store import RunStore
    from stepedit_core.lifecycle import early_setup
    from stepedit_core.lifecycle.progress import reporting
    from stepedit_core.lifecycle.reaper import start_reaper
    from stepedit_core.lifecycle.stops import stop_on_signals
    from stepedit_flows.heartbeats import end_flows_without_waiting
    from stepedit_flows.prefect_server import start_temporary_server
    from stepedit_flows.progress import make_renderer

    shared_ray = use_shared_ray(job)  # not the reaper's to stop: it starts before the reaper
    start_reaper()  # stops a temporary server and a local Ray even if this process is killed
    renderer = make_renderer(quiet, sys.stderr)
    store = RunStore(job.out, job.run_id)
    end_flows_without_waiting()
    try:
        with run_log(store) as log, stop_on_signals(store), reporting(renderer):
            if set_up_early:
                early_setup.start(job)
            start_ray_early(job, shared_ray)
            try:
                local_server.wait_until_ready()
            except RuntimeError as exc:
                raise Refused(str(exc)) from None
            # none chosen (STEPEDIT_PREFECT_SERVER=temporary): Prefect's temporary server, out
            # of the terminal's reach (Ctrl-C must not stop it first)
            start_temporary_server()
            yield log
    except BaseException:
        early_setup.discard(wait=False)  # a stop or a crash does not wait for models to load
        raise
    else:
        early_setup.discard()  # the setup's thread has ended, whether the flow took it or not
    finally:
        renderer.close()


def run_flow(job: JobSpec, quiet: bool) -> int:
    from stepedit_flows.edit_catalog import edit_catalog
    from stepedit_tasks.summary import summary_text

    with flow_session(job, quiet, set_up_early=True) as log:
        record = edit_catalog(job)
    print(summary_text(record), end="")
    print(f"log: {log}")
    return exit_status(record)


def print_finished(job: JobSpec) -> int:
    from stepedit_core.foundation.store import RunStore
    from stepedit_tasks.summary import summary_text

    store = RunStore(job.out, job.run_id)
    record = store.read_json(store.run_json)
    print(summary_text({**record, "nothing_to_do": True}), end="")
    return exit_status(record)
