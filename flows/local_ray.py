"""A local Ray cluster that outlives runs, so a run on the Ray executor does not pay for starting
and stopping one.

A run on the Ray executor with no cluster named (`--ray-address`, `$RAY_ADDRESS`) joins the
shared local cluster of its stepedit home (the Prefect home, `$PREFECT_HOME`, default
~/.prefect), starting it when none runs; the next runs find it and join it. It stops itself
after `STEPEDIT_RAY_IDLE_S` seconds (default 900) in which no run used it.
`STEPEDIT_RAY=temporary` turns this off: each run then starts a Ray of its own and stops it
when it ends.

The cluster (`ray start --head`) runs under a keeper process (`python -m
stepedit_flows.local_ray serve`) detached from whoever started it: it is nobody's child, so
neither a terminal's Ctrl-C nor the reaper of the run that started it stops it. The keeper leads
a process group (named by its pid) that Ray's GCS, raylet and agents stay in; the state file
(`stepedit-ray.json`) records it with the cluster's address. Files coordinate runs and keeper:

- `stepedit-ray.lock`: held exclusively to look for a cluster and start one, so two runs
  starting at once start one cluster between them;
- `stepedit-ray.users`: every run using the cluster holds a shared lock on it while it runs
  (the kernel drops it when the run ends, however it ends); the keeper counts the cluster idle
  only while it can take the lock exclusively.

A run's work on the cluster belongs to the run's Ray job: when the run's process ends (finished,
stopped, killed), Ray ends the job and kills its actors and tasks; the cluster stays up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from stepedit_core.lifecycle.lease import pid_alive
from stepedit_core.lifecycle.reaper import reap
from stepedit_flows.keeper import (
    KeeperFiles,
    KeeperStopped,
    detach,
    free_port,
    prefect_home,
    stop_keeper_on_sigterm,
)

START_TIMEOUT_S = 120.0  # `ray start` takes 4-8 s on a loaded 2-core machine
AUTO_IDLE_S = 900.0  # how long the cluster waits for the next run
CHECK_S = 2.0  # how often the keeper looks for users
STOP_GRACE_S = 1.0  # GCS and raylet ignore SIGTERM for about a second; then they are killed
MODE_ENV = "STEPEDIT_RAY"  # "temporary": each run starts and stops a Ray of its own
IDLE_ENV = "STEPEDIT_RAY_IDLE_S"
FILES = KeeperFiles("stepedit-ray")  # its lock, users and state files
DEFAULT_AUTH_MODE = "token"  # what `ray start` uses when RAY_AUTH_MODE is not set


def state_file() -> Path:
    return FILES.path("json")


def log_file() -> Path:
    return FILES.path("log")


def _read_state() -> dict | None:
    try:
        state = json.loads(state_file().read_text())
        int(state["pid"]), float(state["created"]), str(state["address"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return state


def _write_state(state: dict) -> None:
    temporary = state_file().with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(state_file())


def _alive_state() -> dict | None:
    """The state file's cluster when its keeper is alive (it may still be starting); else None.
    A pid reused by another process does not count: its start time differs."""
    state = _read_state()
    if state is None or not pid_alive(int(state["pid"])):
        return None
    try:
        if abs(psutil.Process(int(state["pid"])).create_time() - float(state["created"])) > 1.0:
            return None
    except psutil.Error:
        return None
    return state


def running() -> dict | None:
    """The cluster's state ({"pid", "address", "started", "idle_stop_s", "ready", ...}) when its
    keeper runs and the cluster is up; else None."""
    state = _alive_state()
    return state if state is not None and state.get("ready") else None


def idle_stop_s() -> float:
    """Seconds the cluster waits for the next run (`STEPEDIT_RAY_IDLE_S`)."""
    text = os.environ.get(IDLE_ENV, "")
    try:
        seconds = float(text) if text else AUTO_IDLE_S
    except ValueError:
        raise ValueError(f"{IDLE_ENV} must be a number of seconds, got {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"{IDLE_ENV} must be more than 0 seconds, got {text!r}")
    return seconds


def wanted(address: str | None) -> bool:
    """Whether a run on the Ray executor joins the shared cluster: no cluster named (`address`,
    `$RAY_ADDRESS`) and not turned off (`STEPEDIT_RAY=temporary`)."""
    if address or os.environ.get("RAY_ADDRESS"):
        return False
    mode = os.environ.get(MODE_ENV, "shared")
    if mode not in ("shared", "temporary"):
        raise ValueError(f"{MODE_ENV} must be 'shared' or 'temporary', got {mode!r}")
    return mode == "shared"


def use_for_this_run() -> dict:
    """Find the shared cluster or start one, and mark this process as its user until it exits;
    returns its state. Does not wait for a cluster that is starting (`wait_until_ready` does)."""
    with FILES.start_lock():
        state = _alive_state() or _spawn(idle_stop_s())
        FILES.hold_users_lock()  # before the lock is released: the keeper sees a user from now on
    return state


def wait_until_ready(state: dict, timeout_s: float = START_TIMEOUT_S) -> dict:
    """The state of the cluster `state` names once it is up; RuntimeError when its keeper
    stops or it does not come up in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = _read_state()
        if current is None or current["pid"] != state["pid"] or not pid_alive(int(state["pid"])):
            raise RuntimeError(f"the local Ray cluster did not come up; see {log_file()}")
        if current.get("ready"):
            return current
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local Ray cluster did not come up in time; see {log_file()}")
        time.sleep(0.1)


def join_environment(state: dict) -> None:
    """Settings this process needs to join the cluster: its address, and its authentication
    mode (a token cluster's token is in Ray's usual place)."""
    os.environ["RAY_ADDRESS"] = state["address"]
    os.environ["RAY_AUTH_MODE"] = state["auth_mode"]


def _spawn(idle_s: float) -> dict:
    """Start a keeper (and its cluster) detached from this process and record it; called under
    the start lock. Returns at once: the cluster is up some seconds later (state "ready")."""
    port = free_port()
    command = [sys.executable, "-m", "stepedit_flows.local_ray", "serve", str(port), str(idle_s)]
    home = prefect_home()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    auth_mode = env.setdefault("RAY_AUTH_MODE", DEFAULT_AUTH_MODE)
    # the child forks the keeper, prints its pid and exits: the keeper is not our descendant
    with subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=home,  # not the run's folder, which may go away while the cluster runs
    ) as launcher:
        line = launcher.stdout.readline() if launcher.stdout else b""
        launcher.wait()
    try:
        pid = int(line)
        created = psutil.Process(pid).create_time()
    except (ValueError, psutil.Error):
        raise RuntimeError(f"the local Ray cluster did not start; see {log_file()}") from None
    state = {
        "pid": pid,
        "created": created,
        "address": f"127.0.0.1:{port}",
        "auth_mode": auth_mode,
        "started": time.time(),
        "idle_stop_s": idle_s,
        "ready": False,
    }
    _write_state(state)
    return state


def stop() -> dict | None:
    """Stop the cluster this home's state file names (its keeper stops the cluster's processes
    and exits); returns its state (None: none was running). A stale state file is removed."""
    with FILES.start_lock():
        state = _alive_state()
        if state is not None:
            pid = int(state["pid"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30.0
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        state_file().unlink(missing_ok=True)
    return state


# --- the keeper: `python -m stepedit_flows.local_ray serve PORT IDLE_S` ----------------------


def _mine() -> bool:
    state = _read_state()
    return state is not None and int(state["pid"]) == os.getpid()


def _cluster_processes() -> dict[int, float]:
    """The cluster's processes: those of this keeper's process group (GCS, raylet, agents; the
    `ray start` that started them has exited) and their descendants (workers, which put
    themselves in groups of their own). Pid -> start time; the keeper left out."""
    me = os.getpid()
    found: dict[int, float] = {}
    for proc in psutil.process_iter():
        try:
            if proc.pid == me or os.getpgid(proc.pid) != me:
                continue
            for each in (proc, *proc.children(recursive=True)):
                found[each.pid] = each.create_time()
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def ray_temp_dir(keeper: int | None = None) -> Path:
    """The Ray folder (sessions, sockets, spilled objects) of the cluster `keeper` (default:
    this process) keeps. Not Ray's default /tmp/ray: `ray start` names its cluster in the temp
    folder's `ray_current_cluster`, and every `ray.init()` without an address on the machine
    joins the cluster named there."""
    return Path(tempfile.gettempdir()) / f"stepedit-ray-{keeper or os.getpid()}"


def _ray_start(port: int) -> int:
    """`ray start --head` on `port` (returns when the cluster is up, leaving its processes in
    this process group); its exit status."""
    command = [
        sys.executable, "-c", "from ray.scripts.scripts import main; main()", "start", "--head",
        f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
        "--disable-usage-stats", f"--temp-dir={ray_temp_dir()}",
    ]  # fmt: skip
    return subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode


def _core_processes() -> list[psutil.Process]:
    """The cluster's GCS server and raylet: while both run, the cluster does."""
    core = []
    for pid in _cluster_processes():
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.name() in ("gcs_server", "raylet"):
                core.append(proc)
    return core


def serve(port: int, idle_s: float) -> int:
    """Start the cluster, mark it ready, and keep it until it dies, the keeper is stopped, or no
    run used it for idle_s seconds; then stop every process of it. The state file is removed
    when it still names this keeper."""
    detach(log_file())
    stop_keeper_on_sigterm()
    try:
        if _ray_start(port) != 0:
            raise KeeperStopped
        state = _read_state()
        if state is not None and _mine():
            _write_state({**state, "ready": True, "ready_at": time.time()})
        core = _core_processes()
        last_used = time.monotonic()
        while len(core) == 2 and all(proc.is_running() for proc in core):
            time.sleep(min(CHECK_S, idle_s))
            if FILES.in_use():
                last_used = time.monotonic()
            elif time.monotonic() - last_used > idle_s:
                with FILES.start_lock():  # no run is choosing this cluster while it goes
                    if not FILES.in_use():
                        if _mine():
                            state_file().unlink(missing_ok=True)
                        break
    except KeeperStopped:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the stop below must not be cut short
    if _mine():
        state_file().unlink(missing_ok=True)
    reap(_cluster_processes(), STOP_GRACE_S)
    shutil.rmtree(ray_temp_dir(), ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepedit_flows.local_ray")
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("port", type=int)
    parser.add_argument("idle_s", type=float)
    args = parser.parse_args(argv)
    return serve(args.port, args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
