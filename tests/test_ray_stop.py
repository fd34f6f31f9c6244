"""A local Ray is stopped all at once when `stepedit` ends: none of its processes outlives the
stop (checked in a process of its own, so the session's shared Ray is not touched)."""

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, os
import psutil, ray
from stepedit_core.executors.ray_data import ensure_ray
from stepedit_flows.run_command import stop_local_ray

ensure_ray()

@ray.remote
class Echo:
    def ping(self):
        return os.getpid()

worker = ray.get(Echo.remote().ping.remote())
me = psutil.Process()
started = [p.pid for p in me.children(recursive=True)]
stop_local_ray()
alive = []
for pid in started:
    try:
        proc = psutil.Process(pid)
        if proc.status() != psutil.STATUS_ZOMBIE:
            alive.append(pid)
    except psutil.NoSuchProcess:
        pass
print(json.dumps({"started": started, "worker": worker, "alive": alive,
                  "initialized": ray.is_initialized()}))
"""


@pytest.mark.slow
def test_stopping_a_local_ray_leaves_none_of_its_processes() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["worker"] in found["started"]  # the actor's worker was among them
    assert len(found["started"]) >= 3  # GCS, raylet, the worker at least
    assert found["alive"] == [] and found["initialized"] is False
