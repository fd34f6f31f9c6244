"""Running a flow from the command line: Ray starts in the background for a Ray run and the
executor uses that start (one Ray, alive after the thread's work is done); flows end without
waiting for Prefect's heartbeat thread to wake up."""

import functools
import logging
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from stepedit_flows.run_command import start_ray_early

# a Ray run's session: Ray starts off the main thread, the executor's own call then waits for it
EARLY_RAY = """
import sys
from types import SimpleNamespace
import ray
from stepedit_core.executors.ray_data import ensure_ray
from stepedit_flows.run_command import start_ray_early

inits = []
real_init = ray.init
ray.init = lambda *args, **kwargs: inits.append(1) or real_init(*args, **kwargs)
thread = start_ray_early(SimpleNamespace(executor="ray", ray_address=None))
ensure_ray()  # the executor's call: waits for the start under way, starts nothing more
assert ray.is_initialized() and len(inits) == 1

@ray.remote
def plus_one(x):
    return x + 1

# Ray's processes die with the thread that started them: they must still answer
assert ray.get([plus_one.remote(i) for i in range(4)]) == [1, 2, 3, 4]
assert thread.is_alive()
ray.shutdown()
print("ok")
"""


def test_a_local_run_starts_no_ray():
    assert start_ray_early(SimpleNamespace(executor="local", ray_address=None)) is None


def test_a_ray_already_running_in_the_process_is_not_started_again(ray_cluster):
    assert start_ray_early(SimpleNamespace(executor="ray", ray_address=None)) is None


@pytest.mark.slow
def test_ray_started_early_is_the_one_the_executor_uses():
    done = subprocess.run(
        [sys.executable, "-c", EARLY_RAY], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    assert "SIGTERM handler is not set" not in done.stderr


class BeatingEngine:
    """What Prefect's heartbeat thread asks of a flow run's engine; notes each heartbeat."""

    heartbeat_seconds = 30
    flow_run = None
    logger = logging.getLogger("test-heartbeats")

    def __init__(self) -> None:
        self.beats: list[float] = []
        self.first = threading.Event()

    def _build_heartbeat_event_template(self) -> tuple[dict, list]:
        return {}, []

    def _emit_flow_run_heartbeat(self, resource: dict, related: list) -> None:
        self.beats.append(time.monotonic())
        self.first.set()


def test_a_flow_ends_without_joining_its_heartbeat_thread_which_ends_by_itself(monkeypatch):
    from prefect import flow_engine

    from stepedit_flows.heartbeats import end_flows_without_waiting

    # Prefect's own function, even when a flow run earlier in this process replaced it already
    current = flow_engine._send_heartbeats
    original = current.func if isinstance(current, functools.partial) else current
    monkeypatch.setattr(flow_engine, "_send_heartbeats", original)
    assert end_flows_without_waiting()
    assert not end_flows_without_waiting()  # once per process
    assert flow_engine._send_heartbeats.keywords == {"join_on_exit": False}
    engine = BeatingEngine()
    before = set(threading.enumerate())
    with flow_engine._send_heartbeats(engine):
        assert engine.first.wait(timeout=30)  # the flow run's first heartbeat, as before
        (beating,) = set(threading.enumerate()) - before
    beating.join(timeout=30)  # it wakes up within a second and sees the flow ended
    assert not beating.is_alive()
    assert len(engine.beats) == 1  # nothing sent after the flow ended
