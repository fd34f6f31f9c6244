"""Ray Data streaming executor: one `map_batches` per stage, an actor pool per model stage.

Stages that load models (`Stage.needs_actor`) run in actor pools, so a model loads once per
actor and tokenizer, LLM and decoder pools scale and overlap independently. Bookkeeping stages
(load, round start/end) run inside the neighbouring model stage's call, saving a hop through
the object store; with no model stage at all they run as plain Ray tasks. Items travel between
stages as pickled bytes in a single binary column: Arrow never has to understand an audio array
or a token list. Those bytes stay small: round audio travels by reference (audio_ref.py), and
an item carries samples only from the engine stage that made them to the round's QC stage,
which publishes them, and for a short source clip (under `audio_ref.BY_REFERENCE_OVER_S`), which is
read whole.

CPU sizing matters on small machines: Ray Data needs free CPU slots for its own task operators,
and a set of pools that reserves every CPU makes a job wait forever without an error.
`size_pools` therefore keeps a small reserve (`TASK_RESERVE`) and hands the rest to the actor
pools: a CPU-bound stage gets about one actor per core, each asking for a little less than a
whole CPU, so on N cores N actors work while Ray Data's tasks still find a slot.

An actor whose process dies has its batch retried once on a restarted actor
(`MAX_TASK_RETRIES`); a batch that kills its worker again fails the run's executor call, and the
shard runner isolates the clip responsible (see shard.py). Round records leave the workers as
each round ends, through a small actor (the round channel, ray_round_records.py), instead of
riding on the items to the driver; each actor also reports its `setup()` to it, so run.json can
say how many times each model was loaded (without an open channel, to a counter actor of the
executor's own).

A shard small enough to fit in one batch of every model stage has no batches whose stages
could overlap: its one batch passes the stages in turn. When none of those stages uses a GPU or
an environment of its own, one actor then hosts them all (`one_actor_suffices`), which starts
one worker process (importing the engine's libraries, loading its models) instead of one per
stage. That batch goes straight to a plain Ray actor (`_run_in_one_actor`), with the same
retries, not through Ray Data: streaming one batch needs none of it, and Ray Data would cost the
actor's worker and the driver its import (about 0.6 s and 1 s), and a cluster's first Ray Data
run its detached actors (worker processes that stay with the cluster), on the path of a short
run's only shard.

Rounds are laid out one after another, so N rounds of a three-stage engine make 3N pools. When
they all fit the cluster (GPU fractions and declared memory) they stream together and rounds
overlap. When they do not (one 16 GB GPU, three rounds of a 3B model), `schedule_waves` runs one
round at a time: each round's pools start, the round's output is materialized in the object
store, the pools are released, and the next round starts. Either way no pool waits for
resources that can never come.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepedit_core.executors.ray_round_records import RayRoundChannel, SetupCounter
from stepedit_core.foundation.stages import Stage, WorkItem
from stepedit_core.lifecycle.round_handoff import MissingRoundRecords
from stepedit_core.lifecycle.stage_envs import StageEnv
from stepedit_core.lifecycle.stops import keep_signal_handlers

log = logging.getLogger(__name__)

TASK_RESERVE = (0.2, 0.05)  # CPUs kept for Ray Data's tasks: at least 0.2, or 5% of the cluster
MAX_TASK_RETRIES = 1  # a batch whose worker died runs once more, then the run isolates the clip
# an actor restarts as often as a batch is retried, no more: an actor left restarting after its
# executor call failed holds its CPUs, and the next call's pools (the isolating reruns) wait
# for them forever on a small cluster whose pools have one actor each
MAX_RESTARTS = MAX_TASK_RETRIES
MEMORY_SHARE = 0.7  # of the cluster's memory, for the declared memory of all actors together
TASK_CPUS = 0.1  # per bookkeeping task; they are I/O and hashing, not compute


@dataclass(frozen=True)
class PoolSize:
    stage: str
    actor: bool
    cpus: float
    gpus: float
    min_size: int
    max_size: int


def size_pools(stages: list[Stage], cluster_cpus: float, cluster_gpus: float) -> list[PoolSize]:
    """Resources per stage, sized so the pools together use the cluster's CPUs but for a small
    reserve for Ray Data's own tasks, and so one actor of every pool can run at the same time
    (GPU fractions shrink if needed)."""
    actor_stages = [s for s in stages if s.needs_actor]
    reserve = max(TASK_RESERVE[0], TASK_RESERVE[1] * cluster_cpus)
    budget = max(cluster_cpus - reserve, 0.1)
    fair_share = budget / max(len(actor_stages), 1)
    gpu_demand = sum(s.resources.gpus for s in actor_stages)
    gpu_scale = min(1.0, cluster_gpus / gpu_demand) if gpu_demand > 0 else 1.0
    sizes = []
    for stage in stages:
        if not stage.needs_actor:
            sizes.append(
                PoolSize(stage.name, False, min(TASK_CPUS, stage.resources.cpus), 0.0, 1, 1)
            )
            continue
        # about one actor per CPU the stage asks for, each taking an equal slice of its share
        by_cpu = max(1, round(fair_share / max(stage.resources.cpus, 1e-3)))
        slice_ = min(stage.resources.cpus, fair_share / by_cpu)
        cpus = max(0.001, math.floor(slice_ * 1000) / 1000)  # never round up
        gpus = math.floor(stage.resources.gpus * gpu_scale * 1000) / 1000 if cluster_gpus else 0.0
        if gpus > 0:
            # every GPU stage gets its share of the GPUs; a fraction lets actors share a card
            gpu_stages = sum(1 for s in actor_stages if s.resources.gpus > 0)
            by_gpu = max(1, math.floor(cluster_gpus / gpu_stages / gpus + 1e-9))
            size = min(by_cpu, by_gpu)
        else:
            size = by_cpu
        if stage.max_actors is not None:
            size = min(size, stage.max_actors)
        sizes.append(PoolSize(stage.name, True, cpus, gpus, 1, size))
    return sizes


def group_stages(stages: list[Stage]) -> list[list[Stage]]:
    """Bookkeeping stages ride along with the next model stage (trailing ones with the last), so
    a round costs one hop between processes per model stage instead of one per stage."""
    groups: list[list[Stage]] = []
    pending: list[Stage] = []
    for stage in stages:
        pending.append(stage)
        if stage.needs_actor:
            groups.append(pending)
            pending = []
    if pending:
        if groups:
            groups[-1].extend(pending)
        else:
            groups.append(pending)
    return groups


def split_rounds(stages: list[Stage]) -> list[list[Stage]]:
    """The stage list cut after each round's end: one list per round."""
    waves: list[list[Stage]] = [[]]
    for stage in stages:
        waves[-1].append(stage)
        if stage.ends_round:
            waves.append([])
    return [wave for wave in waves if wave]


def fits_at_once(stages: list[Stage], cluster_gpus: float, cluster_memory: float) -> bool:
    """Whether one actor of every model stage can be resident at the same time."""
    actors = [s for s in stages if s.needs_actor]
    gpus = sum(s.resources.gpus for s in actors) if cluster_gpus > 0 else 0.0
    memory = sum(s.resources.memory_mb for s in actors) * 2**20
    return gpus <= cluster_gpus + 1e-9 and memory <= cluster_memory * MEMORY_SHARE


def one_actor_suffices(stages: list[Stage], items: int, own_envs: Iterable[str] = ()) -> bool:
    """Whether one actor may host every model stage of a shard of `items` items: the shard fits
    in one batch of each (so separate pools would have nothing to overlap) and none of them
    asks for a GPU or runs in an environment of its own (`own_envs`: stage names)."""
    actors = [s for s in stages if s.needs_actor]
    named = set(own_envs)
    return (
        len(actors) > 1
        and items <= min(s.batch_size for s in actors)
        and all(s.resources.gpus == 0 and s.name not in named for s in actors)
    )


def schedule_waves(
    stages: list[Stage],
    cluster_cpus: float,
    cluster_gpus: float,
    cluster_memory: float,
    one_actor: bool = False,
) -> list[list[tuple[list[Stage], PoolSize]]]:
    """Waves of (stage group, pool size): all rounds in one wave when they fit, else a wave per
    round. Within a wave every pool is planned against the whole cluster. `one_actor`: each
    wave's stages run as one group (see `one_actor_suffices`)."""
    together = fits_at_once(stages, cluster_gpus, cluster_memory)
    waves = [stages] if together else split_rounds(stages)
    planned = []
    for wave in waves:
        groups = [wave] if one_actor else group_stages(wave)
        sizes = size_pools([_lead(g) for g in groups], cluster_cpus, cluster_gpus)
        planned.append(list(zip(groups, sizes, strict=True)))
    return planned


def _lead(group: list[Stage]) -> Stage:
    """The stage whose resources and batch size a group runs with: its model stage, if any."""
    return next((s for s in group if s.needs_actor), group[0])


class _GroupActor:
    """Hosts a model stage (plus its bookkeeping) in a Ray actor: setup once, then per batch.

    The stages (and the setup counter) come with each batch, not to the constructor, and are
    set up on the first: Ray keeps a restartable actor's constructor arguments only while the
    driver holds them, and says so on the terminal at every start, while a retried call brings
    its own arguments, so a restarted actor sets up again from those."""

    def __init__(self) -> None:
        self.stages: list[Stage] | None = None

    def __call__(
        self, batch: dict[str, np.ndarray], stages: list[Stage], counter: Any = None
    ) -> dict[str, np.ndarray]:
        if self.stages is None:
            for stage in stages:
                stage.setup()
                if counter is not None and stage.needs_actor:
                    counter.add.remote(stage.name)
            self.stages = stages
        return _apply(batch, self.stages)

    def process(
        self, batch: dict[str, np.ndarray], stages: list[Stage], counter: Any = None
    ) -> dict[str, np.ndarray]:
        """`__call__` under a name a plain actor's handle can call."""
        return self(batch, stages, counter)


def _last_counts(channel: RayRoundChannel) -> dict[str, int]:
    """What a closing channel counted; nothing from one that died or whose cluster is gone
    (the run's own error says why, and the counts only inform run.json)."""
    import ray

    if not ray.is_initialized():
        return {}
    try:
        return channel.setups()
    except (MissingRoundRecords, ray.exceptions.RayError):
        return {}


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {name: a.get(name, 0) + b.get(name, 0) for name in {*a, *b}}


def _apply(batch: dict[str, np.ndarray], stages: list[Stage]) -> dict[str, np.ndarray]:
    items = [pickle.loads(blob) for blob in batch["item"]]
    for stage in stages:
        items = stage.process_batch(items)
    return {"item": np.array([pickle.dumps(i, protocol=5) for i in items], dtype=object)}


RAY_TO_CONSOLE_ENV = "STEPEDIT_RAY_LOG_TO_DRIVER"


_ray_init_lock = threading.Lock()  # a run may start Ray in the background (stepedit_flows)


def ensure_ray(
    address: str | None = None,
    worker_env: Mapping[str, str] | None = None,
    wait: Callable[[], object] | None = None,
) -> None:
    """Connect to (or start) Ray once per process; a call while another thread starts it waits
    for that start. `worker_env`: environment variables of this job's workers (on a cluster
    started by another process they would otherwise inherit that process's). `wait`: called
    first, under the same lock (a cluster that is still starting)."""
    with _ray_init_lock:
        if wait is not None:
            wait()
        _init_ray(address, worker_env)


def _init_ray(address: str | None, worker_env: Mapping[str, str] | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # A new local cluster turns token authentication on and warns, at every start, that it
    # did: a notice about Ray's defaults, not about the run (errors still show).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    # `stepedit run -v` asks for Ray's INFO lines and its workers' output on the console;
    # otherwise they stay in Ray's session logs (and the run's log file, see stepedit_flows)
    verbose = os.environ.get(RAY_TO_CONSOLE_ENV) == "1"
    with keep_signal_handlers():  # Ray's SIGTERM handler would drain for 30 s and exit 1
        ray.init(
            address=address,
            ignore_reinit_error=True,
            include_dashboard=False,
            logging_level=logging.INFO if verbose else logging.WARNING,
            log_to_driver=verbose,
            runtime_env=_worker_env_runtime_env(worker_env),
        )


def _worker_env_runtime_env(worker_env: Mapping[str, str] | None) -> dict[str, Any] | None:
    """A job-level runtime environment that sets `worker_env` in each of the job's workers as
    it starts: a setup hook rather than the runtime environment's `env_vars`, which Ray's agent
    writes to its log in full (credentials included); the hook travels pickled, out of logs."""
    if not worker_env:
        return None
    env = dict(worker_env)

    def set_worker_env() -> None:
        os.environ.update(env)

    return {"worker_process_setup_hook": set_worker_env}


def _quiet_ray_data_console() -> None:
    """The run reports its own progress: Ray Data's per-dataset plan lines (INFO) and its note
    that its own progress bars are off (WARNING) are not about the user's run. Its log files
    under the Ray session folder still receive warnings and errors."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


class RayDataExecutor:
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        progress_bars: bool = False,
        stage_envs: Mapping[str, StageEnv] | None = None,
    ) -> None:
        self.address = address
        self.progress_bars = progress_bars
        self._counter: Any = None
        self._channel: RayRoundChannel | None = None  # open: its actor counts the setups
        self._counted: dict[str, int] = {}  # setups counted by channels already closed
        # stage name -> the environment its workers run in (see stepedit_core.lifecycle.stage_envs)
        self.stage_envs = dict(stage_envs or {})

    @contextmanager
    def round_channel(self) -> Iterator[RayRoundChannel]:
        """The round channel of a run of shards: a named actor that the rounds' ends in the
        workers put their records into (ray_round_records.py), killed when the run ends. While
        it is open its actor also counts the actors' setups."""
        ensure_ray(self.address)
        channel = RayRoundChannel()
        self._channel = channel
        try:
            yield channel
        finally:
            self._channel = None
            self._counted = _add_counts(self._counted, _last_counts(channel))
            channel.close()

    def counter(self) -> Any:
        """Where actors report their setups: the open round channel's actor, else a counter
        actor of this executor's, created on first use."""
        import ray

        if self._channel is not None:
            return self._channel.setup_counter
        if self._counter is None:
            self._counter = ray.remote(num_cpus=0)(SetupCounter).remote()
        return self._counter

    @property
    def setups(self) -> dict[str, int]:
        """Stage name -> setup() calls by this executor's actors so far."""
        counts = dict(self._counted)
        if self._channel is not None:
            counts = _add_counts(counts, self._channel.setups())
        if self._counter is not None:
            import ray

            counts = _add_counts(counts, ray.get(self._counter.get.remote()))
        return counts

    def run(self, stages: list[Stage], items: Iterable[WorkItem]) -> Iterator[WorkItem]:
        import ray

        ensure_ray(self.address)
        blobs = [{"item": pickle.dumps(item, protocol=5)} for item in items]
        if not blobs:
            return
        resources = ray.cluster_resources()
        one_actor = one_actor_suffices(stages, len(blobs), self.stage_envs)
        waves = schedule_waves(
            stages,
            resources.get("CPU", 1.0),
            resources.get("GPU", 0.0),
            resources.get("memory", float("inf")),
            one_actor=one_actor,
        )
        if one_actor and len(waves) == 1:
            ((group, size),) = waves[0]
            yield from self._run_in_one_actor(group, size, [b["item"] for b in blobs])
            return
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.progress_bars
        _quiet_ray_data_console()
        context.execution_options.preserve_order = False
        if len(waves) > 1:
            log.info(
                "pools of all rounds do not fit the cluster: running %d rounds one at a time",
                len(waves),
            )
        # Enough blocks for every pool to get work, small enough to stream.
        ds = ray.data.from_items(blobs, override_num_blocks=max(1, min(len(blobs), 64)))
        for number, wave in enumerate(waves):
            if number > 0:
                ds = ds.materialize()  # the previous round's pools finish and are released
            for group, size in wave:
                env = self.stage_envs.get(_lead(group).name, StageEnv())
                ds = _map(ds, group, size, self.counter(), env.runtime_env())
        for batch in ds.iter_batches(batch_size=16, batch_format="numpy", prefetch_batches=1):
            for blob in batch["item"]:
                yield pickle.loads(blob)

    def _run_in_one_actor(
        self, group: list[Stage], size: PoolSize, blobs: list[bytes]
    ) -> Iterator[WorkItem]:
        """One batch through every stage in one plain actor, retried as Ray Data retries it: a
        batch whose worker died runs once more on the restarted actor, then the call fails
        with Ray's actor error (shard.run_isolating tells a worker's death by it)."""
        import ray

        actor = (
            ray.remote(_GroupActor)
            .options(
                num_cpus=size.cpus,
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_TASK_RETRIES,
            )
            .remote()
        )
        try:
            batch = {"item": np.array(blobs, dtype=object)}
            done = actor.process.remote(batch, group, self.counter())
            # waits in steps, so a stop signal is handled while the batch runs
            while not ray.wait([done], timeout=0.5)[0]:
                pass
            out = ray.get(done)
        finally:
            ray.kill(actor)  # its CPUs are free for the next shard's actor at once
        for blob in out["item"]:
            yield pickle.loads(blob)


def _map(
    ds: Any,
    group: list[Stage],
    size: PoolSize,
    counter: Any,
    runtime_env: dict[str, Any] | None = None,
) -> Any:
    import ray.data

    lead = _lead(group)
    log.debug("stages %s: %s (runtime env %s)", [s.name for s in group], size, runtime_env)
    # Only a stage with an environment of its own names one: the others inherit the job's.
    remote_args: dict[str, Any] = {"runtime_env": runtime_env} if runtime_env else {}
    if size.actor:
        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for an actor's task retries yet; the keyword is
            # the documented way and the deprecation notice is not about the user's run.
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            return ds.map_batches(
                _GroupActor,
                fn_kwargs={"stages": group, "counter": counter},
                batch_size=lead.batch_size,
                compute=ray.data.ActorPoolStrategy(min_size=size.min_size, max_size=size.max_size),
                num_cpus=size.cpus,
                num_gpus=size.gpus or None,
                batch_format="numpy",
                max_restarts=MAX_RESTARTS,
                max_task_retries=MAX_TASK_RETRIES,
                **remote_args,
            )
    return ds.map_batches(
        _apply,
        fn_kwargs={"stages": group},
        batch_size=lead.batch_size,
        num_cpus=size.cpus,
        batch_format="numpy",
        **remote_args,
    )
