"""Setting up an in-process run's models while its orchestration starts.

A run on the local executor spends its first moments loading the models of its stages and what
runs them (onnxruntime; torch for the model engine), and before that waits on its orchestrator
(creating the flow run, each step's task run) and on the run id's lease. `start` builds the
job's engine and executor and begins their setup in a background thread
(`LocalExecutor.prepare`) as soon as the job is checked; the run's `RunSteps` then takes them
over (`take`) instead of building its own, and the executor waits for the setup before its first
clip, raising any setup error there, where it was raised before.

One setup at a time, for one job, taken over once: another job (or a run given an executor of
its own) builds its own. The caller ends it with `discard`, which waits for its thread, so no
thread of it outlives the caller, whether or not a run took it over (unless the caller is
being stopped: a stop does not wait for a model to finish loading).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass

from stepedit_core.engines import Engine
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.rounds import build_stages


@dataclass(frozen=True)
class EarlySetup:
    job: JobSpec
    engine: Engine
    executor: LocalExecutor


_lock = threading.Lock()
_started: EarlySetup | None = None  # the setup `start` began, until `discard`
_taken = False  # whether a run took it over


def start(job: JobSpec) -> EarlySetup | None:
    """Begin setting up the models of `job`'s stages in the background; None when the job does
    not run in this process (another executor) and nothing started."""
    global _started, _taken
    if job.executor != "local" or job.stage_envs():
        return None
    discard()
    engine = job.make_engine()
    executor = LocalExecutor()
    # every model stage of a round: the engine's own are the objects the run will use (an
    # engine hands out the same stages each time); the others' setup loads the process's
    # shared models, which the run's copies then find loaded
    stages = build_stages(engine, rounds=1, with_clone_round=False, qc_plan=job.qc_plan())
    executor.prepare(stages)
    early = EarlySetup(job, engine, executor)
    with _lock:
        _started, _taken = early, False
    return early


def take(job: JobSpec) -> EarlySetup | None:
    """The setup started for this job, handed over once; None when there is none for it."""
    global _taken
    with _lock:
        early = _started
        if early is None or _taken or (early.job is not job and early.job != job):
            return None
        _taken = True
    return early


def discard(wait: bool = True) -> None:
    """Forget the setup `start` began, once its thread has ended (the caller's session ends
    here: whether or not a run took it, no thread of it outlives the session). An error of a
    setup whose stages never ran concerns no run and is dropped. `wait=False` (a run that was
    stopped or crashed) leaves the thread to end by itself: it is a daemon, and a stop is not
    held up by a model still loading."""
    global _started
    with _lock:
        early, _started = _started, None
    if early is not None and wait:
        with contextlib.suppress(Exception):
            early.executor.wait_prepared()
