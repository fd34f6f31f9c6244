"""A watchdog that stops, after the run's process is gone, every process the run started.

A run starts helper processes: Prefect's temporary API server, and a local Ray (GCS server,
raylet, agents, workers) unless it joins an existing cluster. On a normal exit or a clean stop
they are shut down by their owners' exit hooks; after SIGKILL, an out-of-memory kill or a crash
in native code nothing runs those hooks and the helpers outlive the run, holding ports, memory
and CPUs on a batch machine.

`start_reaper()` spawns `python -m stepedit_core.lifecycle.reaper PID CREATE_TIME` in its own
session, so a
signal sent to the run's process group does not reach it. Every `interval` seconds it records the
run's descendants (pid and start time); once the run is gone it terminates those still alive
(plus any children they started since the last look), waits `grace` seconds, and kills the rest.
Only descendants are touched: a Ray cluster the run merely joined (`--ray-address`, RAY_ADDRESS)
was started by someone else and is never a descendant. A pid is only signalled while its start
time still matches, so a pid reused by an unrelated process is left alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import psutil

INTERVAL_S = 1.0  # how old the list of descendants may be when the run dies
GRACE_S = 5.0  # how long helpers get to exit after SIGTERM before SIGKILL


_watchdogs: dict[int, subprocess.Popen] = {}  # watched pid -> its watchdog


def start_reaper(interval: float = INTERVAL_S, grace: float = GRACE_S) -> subprocess.Popen:
    """Watch this process; returns the watchdog's handle (it exits by itself after the run).
    One watchdog per process: a second call (several runs in one process) returns the first."""
    me = psutil.Process()
    running = _watchdogs.get(me.pid)
    if running is not None and running.poll() is None:
        return running
    _watchdogs[me.pid] = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stepedit_core.lifecycle.reaper",
            str(me.pid),
            repr(me.create_time()),
            "--interval",
            str(interval),
            "--grace",
            str(grace),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the run's process group: Ctrl-C there must not end it
        close_fds=True,
    )
    return _watchdogs[me.pid]


Known = dict[int, float]  # pid -> create_time


def _same(pid: int, created: float) -> psutil.Process | None:
    """The process `pid` if it is still the one first seen (same start time), else None."""
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
            return proc
    except psutil.Error:
        pass
    return None


def descendants(pid: int, created: float, exclude: int) -> Known:
    """The descendants of a live process, as pid -> start time (empty if it is gone)."""
    proc = _same(pid, created)
    if proc is None:
        return {}
    found: Known = {}
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        return {}
    for child in children:
        if child.pid == exclude:
            continue
        try:
            found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def reap(known: Known, grace: float = GRACE_S, exclude: int | None = None) -> list[int]:
    """Terminate, then kill, the processes in `known` that are still the same processes, and
    their current descendants. Returns the pids that were signalled."""
    targets: dict[int, psutil.Process] = {}
    for pid, created in known.items():
        proc = _same(pid, created)
        if proc is None:
            continue
        targets[pid] = proc
        try:
            for child in proc.children(recursive=True):
                targets.setdefault(child.pid, child)
        except psutil.Error:
            continue
    targets.pop(exclude if exclude is not None else os.getpid(), None)
    procs = list(targets.values())
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=grace)
    return sorted(targets)


def watch(pid: int, created: float, interval: float = INTERVAL_S, grace: float = GRACE_S) -> int:
    """Follow `pid` until it is gone, then reap what it started; returns how many were left."""
    me = os.getpid()
    known: Known = {}
    while True:
        current = descendants(pid, created, exclude=me)
        if not current and _same(pid, created) is None:
            break
        # forget the dead so a reused pid is never mistaken for a helper
        known = {p: c for p, c in known.items() if _same(p, c) is not None}
        known.update(current)
        time.sleep(interval)
    return len(reap(known, grace, exclude=me))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepedit_core.lifecycle.reaper")
    parser.add_argument("pid", type=int)
    parser.add_argument("create_time", type=float)
    parser.add_argument("--interval", type=float, default=INTERVAL_S)
    parser.add_argument("--grace", type=float, default=GRACE_S)
    args = parser.parse_args(argv)
    watch(args.pid, args.create_time, args.interval, args.grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
