"""The watchdog: after its process dies it stops what that process started, and nothing else."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from stepedit_core.lifecycle.reaper import descendants, reap

# A stand-in for `stepedit run`: starts the watchdog, a helper that starts its own child (like
# Ray's raylet and its workers), and a helper that ignores SIGTERM; prints their pids, then waits.
PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from stepedit_core.lifecycle.reaper import start_reaper

    watchdog = start_reaper(interval=0.2, grace=1.0)
    nested = subprocess.Popen([sys.executable, "-c",
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']);"
        "time.sleep(120)"])
    stubborn = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"],
        start_new_session=True)
    print(watchdog.pid, nested.pid, stubborn.pid, flush=True)
    time.sleep(120)
    """
)


def alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.fixture()
def bystander():
    """A process the watched one did not start (like a Ray cluster it joined)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def test_sigkilled_parent_leaves_no_descendants_and_spares_others(bystander):
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    started: dict[int, float] = {}
    try:
        watchdog_pid, nested_pid, stubborn_pid = map(int, parent.stdout.readline().split())
        # the nested helper's own child must exist before the parent dies
        assert wait_until(lambda: len(psutil.Process(nested_pid).children()) == 1, 10)
        started.update(
            descendants(parent.pid, psutil.Process(parent.pid).create_time(), exclude=-1)
        )
        assert {watchdog_pid, nested_pid, stubborn_pid} <= set(started)
        assert len(started) == 4  # watchdog, nested, its child, stubborn
        time.sleep(0.5)  # let the watchdog take a look at them
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        survivors = lambda: [p for p, c in started.items() if alive(p, c)]  # noqa: E731
        # SIGTERM, 1 s grace, SIGKILL for the one that ignores SIGTERM, then the watchdog exits
        assert wait_until(lambda: not survivors(), 15), f"still running: {survivors()}"
        assert bystander.poll() is None
    finally:
        parent.kill()
        parent.wait()
        for pid, created in started.items():  # never leave them behind, even on failure
            if alive(pid, created):
                os.kill(pid, signal.SIGKILL)


def test_reap_leaves_a_reused_pid_alone(bystander):
    real = psutil.Process(bystander.pid).create_time()
    assert reap({bystander.pid: real - 100.0}, grace=0.5, exclude=os.getpid()) == []
    assert bystander.poll() is None
    assert reap({bystander.pid: real}, grace=2.0, exclude=os.getpid()) == [bystander.pid]
    assert not alive(bystander.pid, real)


def test_watchdog_exits_after_a_normal_exit_and_is_started_once():
    code = (
        "from stepedit_core.lifecycle.reaper import start_reaper; "
        "first = start_reaper(interval=0.2); assert start_reaper() is first; "
        "print(first.pid, flush=True)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    watchdog = psutil.Process(int(out.stdout))
    created = watchdog.create_time()
    assert wait_until(lambda: not alive(watchdog.pid, created), 10)
