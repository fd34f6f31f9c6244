"""The shared local Ray cluster: runs on the Ray executor with no cluster named join the one
their home's state file names (starting it when none runs; two starting at once start one), a
run that is stopped or killed takes its own workers with it and leaves the cluster up and
usable, and the cluster stops itself once no run used it for its idle time. A stale state file
is never used or acted on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stepedit_flows import local_ray
from stepedit_flows.cli import main
from stepedit_flows.run_command import worker_env

from conftest import shared_server_env, write_clip, write_manifest

# a process that takes the cluster as a run does, joins it with an environment variable of its
# own for its workers, prints the cluster's state and what a worker saw, and holds the cluster
# (as a user) until stdin closes
USER = """
import json, os, sys
import ray
from stepedit_core.executors.ray_data import ensure_ray
from stepedit_flows import local_ray
state = local_ray.use_for_this_run()
local_ray.join_environment(state)
ensure_ray(worker_env={"STEPEDIT_PROBE": "probe-9c4e1f-from-the-run"},
           wait=lambda: local_ray.wait_until_ready(state))

@ray.remote(num_cpus=0)
def probe():
    return os.environ.get("STEPEDIT_PROBE")

seen = ray.get(probe.remote())
ray.shutdown()
print(json.dumps({**local_ray.running(), "seen": seen}))
sys.stdout.flush()
sys.stdin.read()
"""
# the driver pids of every Ray job the cluster has seen
JOBS = """
import json, os, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
print(json.dumps([job["DriverPid"] for job in ray._private.state.jobs()]))
"""

# the processes of the cluster's detached actors: Ray Data starts its own (stats, autoscaling
# coordinator, actor locations...) in the first run that uses it, and they stay with the
# cluster, not with that run
DETACHED = """
import json, sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
actors = ray._private.state.actors().values()
print(json.dumps([a["Pid"] for a in actors if a["IsDetached"] and a["State"] == "ALIVE"]))
"""


def test_the_switch_and_a_named_cluster_decide_whether_runs_share_one(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(local_ray.MODE_ENV, raising=False)
    assert local_ray.wanted(None)
    assert not local_ray.wanted("10.0.0.1:6379")  # --ray-address
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert not local_ray.wanted(None)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv(local_ray.MODE_ENV, "temporary")
    assert not local_ray.wanted(None)
    monkeypatch.setenv(local_ray.MODE_ENV, "always")
    with pytest.raises(ValueError, match="STEPEDIT_RAY must be 'shared' or 'temporary'"):
        local_ray.wanted(None)


@pytest.mark.parametrize("text", ["soon", "0", "-5"])
def test_an_idle_time_that_is_not_a_positive_number_is_refused(monkeypatch, text):
    monkeypatch.setenv(local_ray.IDLE_ENV, text)
    with pytest.raises(ValueError, match="STEPEDIT_RAY_IDLE_S must be"):
        local_ray.idle_stop_s()


def test_workers_get_the_runs_environment_but_not_rays_own(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "catalog-reader")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    env = worker_env()
    assert env["AWS_PROFILE"] == "catalog-reader"
    assert not [key for key in env if key.startswith("RAY_")]


def test_the_start_under_way_is_waited_for_before_ray_is_joined(ray_cluster):
    from stepedit_core.executors.ray_data import ensure_ray

    waited = []
    ensure_ray(wait=lambda: waited.append("cluster up"))
    assert waited == ["cluster up"]


def test_a_stale_state_file_is_neither_used_nor_acted_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = {"pid": gone.pid, "created": 0, "address": "127.0.0.1:9", "ready": True}
    local_ray.state_file().write_text(json.dumps(stale))
    assert local_ray.running() is None
    # a live process that is not the keeper (its pid reused: another start time) is left alone
    stale["pid"] = os.getpid()
    local_ray.state_file().write_text(json.dumps(stale))
    assert local_ray.running() is None
    assert main(["ray", "status"]) == 1
    assert main(["ray", "stop"]) == 0
    assert not local_ray.state_file().exists()
    assert psutil.pid_exists(os.getpid())


# --------------------------------------------------------------------------- end to end

IDLE_S = 2.0  # the holders keep the cluster in use until the test lets it idle out
CLIPS, SHARD_SIZE = 24, 8  # a run that is still busy when its first shard is written


def _stepedit_run(env: dict[str, str], manifest: str, out: Path, run_id: str, *extra: str):
    args = [sys.executable, "-m", "stepedit_flows.cli", "run", manifest, "--out", str(out)]
    args += ["--run-id", run_id, "--executor", "ray", *extra]
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(run: subprocess.Popen) -> None:
    output, _ = run.communicate(timeout=240)
    assert run.returncode == 0, output[-3000:]


def _raylet(keeper: int) -> psutil.Process:
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == "raylet" and os.getpgid(proc.pid) == keeper:
                return proc
        except (psutil.Error, ProcessLookupError):
            continue
    raise AssertionError("the shared cluster has no raylet")


def _children(proc: psutil.Process) -> set[int]:
    return {child.pid for child in proc.children(recursive=True)}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cluster(keeper: int) -> set[int]:
    """The processes of the keeper's group (GCS, raylet, agents) and their descendants."""
    found = set()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == keeper:
                found |= {proc.pid} | _children(proc)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def _driver_pids(address: str, env: dict[str, str]) -> list[int]:
    return _ask_cluster(JOBS, address, env)


def _ask_cluster(script: str, address: str, env: dict[str, str]) -> list[int]:
    done = subprocess.run(
        [sys.executable, "-c", script, address], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_runs_share_one_cluster_that_survives_their_stops_and_stops_when_idle(
    tmp_path, monkeypatch, capsys
):
    env = {
        **os.environ,
        **shared_server_env(),
        local_ray.MODE_ENV: "shared",
        local_ray.IDLE_ENV: str(IDLE_S),
    }
    env.pop("RAY_ADDRESS", None)
    monkeypatch.setenv("PREFECT_HOME", env["PREFECT_HOME"])
    folder = tmp_path / "catalog"
    folder.mkdir()
    one = write_manifest(
        folder / "one.parquet", [{"clip_id": "c0", "audio_uri": write_clip(folder / "c0.wav")}]
    )
    rows = [
        {"clip_id": f"c{i:03d}", "audio_uri": write_clip(folder / f"m{i}.wav", 0.5, 16000, seed=i)}
        for i in range(CLIPS)
    ]
    many = write_manifest(folder / "many.parquet", rows)
    out = tmp_path / "out"
    # two holders start at once: they start one cluster between them; the holders keep it in
    # use between the runs below, whatever their start-up takes
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", USER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    try:
        began = time.monotonic()
        states = [json.loads(h.stdout.readline()) for h in holders]  # type: ignore[union-attr]
        state = states[0]
        keeper = int(state["pid"])
        assert states[1]["pid"] == keeper and states[1]["address"] == state["address"]
        print(f"cluster up after {time.monotonic() - began:.1f} s")
        # the run's environment reached its worker, and no log of the cluster has it
        assert state["seen"] == "probe-9c4e1f-from-the-run"
        logs = [p for p in local_ray.ray_temp_dir(keeper).rglob("*") if p.is_file()]
        logs.append(local_ray.log_file())
        assert len(logs) > 1 and not [p for p in logs if b"probe-9c4e1f" in p.read_bytes()]
        runs = [_stepedit_run(env, one, out, f"one-{i}", "--edit", "speed=faster") for i in (1, 2)]
        for run in runs:
            _finish(run)
        print(f"two one-clip runs done after {time.monotonic() - began:.1f} s")
        drivers = _driver_pids(state["address"], env)
        assert {run.pid for run in runs} <= set(drivers)  # both joined this cluster
        assert local_ray.running()["pid"] == keeper  # and neither started another
        assert main(["ray", "status"]) == 0
        assert state["address"] in capsys.readouterr().out

        raylet = _raylet(keeper)
        for stop in (signal.SIGTERM, signal.SIGKILL):
            before = _children(raylet)
            run = _stepedit_run(env, many, out, f"stopped-{stop.name}", "--edit", "denoise",
                                "--shard-size", str(SHARD_SIZE))  # fmt: skip
            try:
                parts = out / f"stopped-{stop.name}" / "iterations"
                assert _wait_for(lambda p=parts: list(p.glob("shard-00000-part-*.parquet")), 120)
                workers = _children(raylet) - before
                assert workers, "the run's workers are not on the shared cluster"
                run.send_signal(stop)
                run.wait(timeout=60)
                # stopped mid-run (SIGTERM: a clean stop's status), not finished
                assert run.returncode in (128 + stop, -stop), run.returncode
                # its workers go with it (the cluster's detached actors, which Ray Data started
                # in this run, stay with the cluster); the cluster stays
                mine = workers - set(_ask_cluster(DETACHED, state["address"], env))
                assert mine, "the run's own workers are not on the shared cluster"
                assert _wait_for(lambda w=mine: not (w & _children(raylet)), 30), stop.name
                assert raylet.is_running() and local_ray.running()["pid"] == keeper
            finally:
                if run.poll() is None:
                    run.kill()
                    run.wait()
        print(f"stopped runs done after {time.monotonic() - began:.1f} s")
        # not wedged: the CPUs the stopped runs held are free for the next one
        _finish(_stepedit_run(env, one, out, "after-stops", "--edit", "speed=faster"))
        assert local_ray.running()["pid"] == keeper

        print(f"third run done after {time.monotonic() - began:.1f} s")
        cluster = _cluster(keeper)
        assert raylet.pid in cluster
        for each in holders:
            each.stdin.close()  # type: ignore[union-attr]
            each.wait(timeout=30)
        assert _wait_for(lambda: not _alive(keeper), IDLE_S + 60)
        assert not local_ray.state_file().exists()
        assert _wait_for(lambda: not [p for p in cluster if _alive(p)], 30)
    finally:
        for each in holders:
            if each.poll() is None:
                each.kill()
                each.wait()
        local_ray.stop()
