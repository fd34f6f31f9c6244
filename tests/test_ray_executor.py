"""Ray Data executor: pool sizing that never starves Ray Data's own tasks, and parity with the
in-process executor."""

import pytest
from work_items import Finished, round_channels_gone, row_item, run_stages

from stepedit_core.engines import EngineOptions, make_engine
from stepedit_core.engines.base import Engine
from stepedit_core.executors.ray_data import (
    TASK_RESERVE,
    RayDataExecutor,
    group_stages,
    one_actor_suffices,
    schedule_waves,
    size_pools,
)
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.stages import Resources, Stage
from stepedit_core.lifecycle.round_handoff import take_records
from stepedit_core.lifecycle.rounds import build_stages

from conftest import write_clip


class FakeStage(Stage):
    def __init__(self, name, cpus, gpus=0.0, memory_mb=0):
        self.name = name
        self.resources = Resources(cpus=cpus, gpus=gpus, memory_mb=memory_mb)


class FakeGpuEngine(Engine):
    """Three model stages shaped like the Step-Audio-EditX engine's defaults."""

    name = "fake-gpu"

    def supports(self, spec):
        return True

    def build_stages(self):
        return [
            FakeStage("tokenize", 2, 0.2, 6000),
            FakeStage("edit", 2, 0.5, 12000),
            FakeStage("decode", 2, 0.3, 6000),
        ]


GIB = 2**30


def test_rounds_stream_together_when_they_fit():
    stages = build_stages(FakeGpuEngine(), 3, False)
    waves = schedule_waves(stages, cluster_cpus=48, cluster_gpus=4, cluster_memory=512 * GIB)
    assert len(waves) == 1
    assert [plan.stage for _, plan in waves[0]] == ["tokenize", "edit", "decode", "qc"] * 3


def test_rounds_run_one_at_a_time_on_one_gpu():
    stages = build_stages(FakeGpuEngine(), 3, False)
    waves = schedule_waves(stages, cluster_cpus=16, cluster_gpus=1, cluster_memory=128 * GIB)
    assert len(waves) == 3  # 3 rounds x 1.0 GPU of pools can't all be resident on one GPU
    for wave in waves:
        assert sum(plan.gpus for _, plan in wave) <= 1.0
        assert [plan.stage for _, plan in wave] == ["tokenize", "edit", "decode", "qc"]
    assert [s.name for s in waves[1][0][0]] == ["start_round_2", "tokenize"]
    assert waves[-1][-1][0][-1].name == "round_end_3"


def test_declared_memory_also_splits_rounds():
    stages = build_stages(FakeGpuEngine(), 2, False)
    assert len(schedule_waves(stages, 2, 0, 24 * GIB)) == 2
    assert len(schedule_waves(build_stages(make_engine("signal"), 3, False), 2, 0, 24 * GIB)) == 1


def test_gpu_fractions_shrink_so_every_pool_can_start():
    stages = [FakeStage("a", 1, 0.5), FakeStage("b", 1, 0.5), FakeStage("c", 1, 0.5)]
    plans = size_pools(stages, cluster_cpus=8, cluster_gpus=1)
    assert sum(p.gpus for p in plans) <= 1.0
    assert all(p.gpus > 0 for p in plans)


@pytest.mark.parametrize("cpus", [2, 4, 16])
def test_pools_leave_cpus_for_ray_data_tasks(cpus):
    stages = [FakeStage(f"s{i}", 1.0) for i in range(6)]
    plans = size_pools(stages, cluster_cpus=cpus, cluster_gpus=0)
    reserved = sum(p.cpus * p.max_size for p in plans)
    assert reserved <= cpus - max(TASK_RESERVE[0], TASK_RESERVE[1] * cpus) + 1e-6
    assert all(p.min_size == 1 and p.max_size >= 1 for p in plans)


@pytest.mark.parametrize("cpus", [2, 4, 32])
def test_a_cpu_bound_stage_gets_about_one_actor_per_core(cpus):
    (plan,) = size_pools([FakeStage("denoise", 1.0)], cluster_cpus=cpus, cluster_gpus=0)
    assert plan.max_size == {2: 2, 4: 4, 32: 30}[cpus]  # 32 cores: 1.6 CPUs kept back
    assert plan.cpus * plan.max_size <= cpus - 0.2
    assert plan.cpus * plan.max_size >= 0.85 * cpus  # the cores are used, not half of them


def test_gpu_pools_are_sized_by_fraction():
    stages = [
        FakeStage("tokenize", 1.0, 0.2),
        FakeStage("edit", 1.0, 0.5),
        FakeStage("decode", 1.0, 0.3),
    ]
    plans = {p.stage: p for p in size_pools(stages, cluster_cpus=64, cluster_gpus=3)}
    assert plans["edit"].gpus == 0.5 and plans["edit"].max_size == 2  # one GPU's share each
    assert plans["tokenize"].max_size == 5
    no_gpu = {p.stage: p for p in size_pools(stages, cluster_cpus=4, cluster_gpus=0)}
    assert all(p.gpus == 0 for p in no_gpu.values())


def test_bookkeeping_stages_run_as_tasks():
    engine = make_engine("signal")
    plans = size_pools(build_stages(engine, 2, False), 2, 0)
    assert [p.actor for p in plans] == [False, False, True, True, False, False, True, True, False]


def test_bookkeeping_rides_with_the_next_model_stage():
    engine = make_engine("signal")
    groups = group_stages(build_stages(engine, 2, False))
    assert [[s.name for s in g] for g in groups] == [
        ["load", "start_round_1", "signal_edit"],
        ["qc"],
        ["round_end_1", "start_round_2", "signal_edit"],
        ["qc", "round_end_2"],
    ]
    only_bookkeeping = [s for s in build_stages(engine, 1, False) if not s.needs_actor]
    assert group_stages(only_bookkeeping) == [only_bookkeeping]


def _items(tmp_path, n):
    return [
        row_item(
            i,
            f"c{i}",
            write_clip(tmp_path / f"{i}.wav", 1.2, f0=150 + 10 * i),
            parse_chain("speed=1.25;loudness=-20"),
            seed=i,
        )
        for i in range(n)
    ] + [row_item(n, "gone", str(tmp_path / "gone.wav"), parse_chain("denoise"))]


def test_a_shard_of_one_batch_runs_its_cpu_stages_in_one_actor():
    stages = build_stages(make_engine("signal"), 2, False)
    assert one_actor_suffices(stages, 7)
    assert not one_actor_suffices(stages, 17)  # more than one batch: the pools overlap
    assert not one_actor_suffices(stages, 7, own_envs=["qc"])
    assert not one_actor_suffices(build_stages(FakeGpuEngine(), 1, False), 1)
    (wave,) = schedule_waves(stages, 2, 0, 24 * GIB, one_actor=True)
    ((group, plan),) = wave
    assert group == stages and plan.actor and plan.stage == "signal_edit"
    assert len(schedule_waves(stages, 2, 0, 24 * GIB)[0]) == 4


# the default batch fits the shard (one actor for all stages); a batch of 2 does not (a pool
# per stage)
@pytest.mark.parametrize("batch", [None, 2])
def test_ray_matches_local(tmp_path, ray_cluster, batch):
    options = EngineOptions(batch_sizes={"signal_edit": batch, "qc": batch} if batch else {})
    engine = make_engine("signal", options)
    stages = build_stages(engine, 2, False)
    shared = one_actor_suffices(stages, 7)
    assert shared == (batch is None)
    local = {i.clip_id: i for i in run_stages(stages, _items(tmp_path, 6))}
    executor = RayDataExecutor()
    with executor.round_channel() as channel:  # the round ends put into a named actor
        on_ray = build_stages(engine, 2, False, records=channel.sink)
        ran = list(executor.run(on_ray, _items(tmp_path, 6)))
        remote = {i.clip_id: Finished(i, take_records(channel, i)) for i in ran}
        assert channel.held() == 0  # every taken row is gone from the channel
    assert round_channels_gone()  # and the channel's actor with the run
    assert set(remote) == set(local)  # every item comes back, failed ones included
    assert remote["gone"].error_code == "missing_file"
    assert sum(not i.failed for i in local.values()) == 6  # all real clips edited, both rounds
    for clip, item in local.items():
        assert [r.output_sha256 for r in remote[clip].records] == [
            r.output_sha256 for r in item.records
        ]
