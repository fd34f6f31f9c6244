"""A local Prefect server that outlives runs, so a run does not pay for starting one.

A run with no PREFECT_API_URL uses the local server of its Prefect home (`$PREFECT_HOME`,
default ~/.prefect), starting it when none runs; the next runs find it and reuse it. A server a
run started stops itself after `STEPEDIT_SERVER_IDLE_S` seconds (default 900) in which no run
used it; one started by `stepedit server start` runs until `stepedit server stop`.
`STEPEDIT_PREFECT_SERVER=temporary` turns this off: each run then starts and stops Prefect's
temporary server, as Prefect does by itself.

The server runs under a keeper process (`python -m stepedit_flows.local_server serve`) that is
detached from whoever started it: it is nobody's child, so neither a terminal's Ctrl-C nor the
reaper of the run that started it stops it. The keeper and the server share a process group
named by the keeper's pid, which the state file (`stepedit-server.json`) records with the API
URL. Two files coordinate runs and the keeper without a daemon protocol:

- `stepedit-server.lock`: held exclusively to look for a server and start one, so two runs
  starting at once start one server between them;
- `stepedit-server.users`: every run using the server holds a shared lock on it while it runs
  (the kernel drops it when the run ends, however it ends); the keeper counts the server idle
  only while it can take the lock exclusively.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import psutil

from stepedit_core.lifecycle.lease import pid_alive
from stepedit_flows.keeper import (
    KeeperFiles,
    KeeperStopped,
    detach,
    free_port,
    stop_keeper_on_sigterm,
)

START_TIMEOUT_S = 180.0  # a fresh Prefect home builds its database first
AUTO_IDLE_S = 900.0  # how long a server a run started waits for the next run
CHECK_S = 5.0  # how often the keeper looks for users
MODE_ENV = "STEPEDIT_PREFECT_SERVER"  # "temporary": each run starts Prefect's own server
IDLE_ENV = "STEPEDIT_SERVER_IDLE_S"
FILES = KeeperFiles("stepedit-server")  # its lock, users and state files

_chosen: dict | None = None  # the server this process was pointed at


def state_file() -> Path:
    return FILES.path("json")


def log_file() -> Path:
    return FILES.path("log")


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _alive_state() -> dict | None:
    """The state file's server when its keeper is alive (it may still be starting); else None.
    A pid reused by another process does not count: its start time differs."""
    try:
        state = json.loads(state_file().read_text())
        pid, created = int(state["pid"]), float(state["created"])
        str(state["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(pid):
        return None
    try:
        if abs(psutil.Process(pid).create_time() - created) > 1.0:
            return None
    except psutil.Error:
        return None
    return state


def running() -> dict | None:
    """The server's state ({"pid", "api_url", "started", "idle_stop_s"}) when it runs and
    answers; else None."""
    state = _alive_state()
    if state is None or not _healthy(state["api_url"]):
        return None
    return state


def idle_stop_s() -> float:
    """Seconds an automatically started server waits for the next run (`STEPEDIT_SERVER_IDLE_S`)."""
    text = os.environ.get(IDLE_ENV, "")
    try:
        return float(text) if text else AUTO_IDLE_S
    except ValueError:
        raise ValueError(f"{IDLE_ENV} must be a number of seconds, got {text!r}") from None


def use_for_this_run() -> str | None:
    """Point this process at the local server (PREFECT_API_URL), starting one when none runs;
    returns its API URL, or None when the run is to use a configured server (PREFECT_API_URL
    set) or Prefect's temporary one (STEPEDIT_PREFECT_SERVER=temporary). Must be called before
    Prefect is imported. Does not wait for a server that is starting: `wait_until_ready` does,
    so the run's own checks go on meanwhile."""
    global _chosen
    if os.environ.get("PREFECT_API_URL"):
        return None
    mode = os.environ.get(MODE_ENV, "auto")
    if mode not in ("auto", "temporary"):
        raise ValueError(f"{MODE_ENV} must be 'auto' or 'temporary', got {mode!r}")
    if mode == "temporary":
        return None
    with FILES.start_lock():
        state = _alive_state() or _spawn(idle_stop_s())
        FILES.hold_users_lock()  # before the lock is released: the keeper sees a user from now on
    os.environ["PREFECT_API_URL"] = state["api_url"]
    _chosen = state
    return state["api_url"]


def wait_until_ready(timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until the server `use_for_this_run` chose answers (nothing to wait for when it chose
    none); RuntimeError when it stops or does not answer in time."""
    if _chosen is not None:
        _wait_healthy(_chosen, timeout_s)


def _wait_healthy(state: dict, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _healthy(state["api_url"]):
        if not pid_alive(int(state["pid"])) or time.monotonic() > deadline:
            raise RuntimeError(f"the local Prefect server did not come up; see {log_file()}")
        time.sleep(0.2)


def _spawn(idle_s: float) -> dict:
    """Start a keeper (and its server) detached from this process and record it; called under
    the start lock. Returns at once: the server answers some seconds later."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    command = [
        sys.executable, "-m", "stepedit_flows.local_server", "serve", str(port), str(idle_s),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the child forks the keeper, prints its pid and exits: the keeper is not our descendant
    with subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as launcher:
        line = launcher.stdout.readline() if launcher.stdout else b""
        launcher.wait()
    try:
        pid = int(line)
        created = psutil.Process(pid).create_time()
    except (ValueError, psutil.Error):
        raise RuntimeError(f"the local Prefect server did not start; see {log_file()}") from None
    state = {
        "pid": pid,
        "created": created,
        "api_url": api_url,
        "started": time.time(),
        "idle_stop_s": idle_s,
    }
    temporary = state_file().with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(state_file())
    return state


def start() -> dict:
    """`stepedit server start`: start a server that runs until stopped (or return the one
    already running) and wait until it answers."""
    with FILES.start_lock():
        state = _alive_state()
        already = state is not None
        if state is None:
            state = _spawn(idle_s=0.0)
    _wait_healthy(state, START_TIMEOUT_S)
    return {**state, "already_running": already}


def _stop_group(pid: int, grace_s: float = 20.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop() -> dict | None:
    """Stop the server this Prefect home's state file names; returns its state (None: none
    was running). A stale state file is removed either way; a process that is not the keeper
    (its pid reused) is left alone."""
    with FILES.start_lock():
        state = _alive_state()
        if state is not None:
            _stop_group(int(state["pid"]))
        state_file().unlink(missing_ok=True)
    return state


# --- the keeper: `python -m stepedit_flows.local_server serve PORT IDLE_S` -------------------


def _mine() -> bool:
    """Whether the state file still names this keeper."""
    try:
        return int(json.loads(state_file().read_text())["pid"]) == os.getpid()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def serve(port: int, idle_s: float) -> int:
    """Run the server until it exits, the keeper is stopped, or (idle_s > 0) no run used it for
    idle_s seconds; the state file is removed when it still names this keeper."""
    detach(log_file())
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)],
    )  # fmt: skip
    stop_keeper_on_sigterm()
    last_used = time.monotonic()
    try:
        while server.poll() is None:
            time.sleep(min(CHECK_S, idle_s) if idle_s > 0 else CHECK_S)
            if FILES.in_use():
                last_used = time.monotonic()
            elif idle_s > 0 and time.monotonic() - last_used > idle_s:
                with FILES.start_lock():  # no run is choosing this server while it goes
                    if not FILES.in_use():
                        if _mine():
                            state_file().unlink(missing_ok=True)
                        break
    except KeeperStopped:
        pass
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    if _mine():
        state_file().unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stepedit_flows.local_server")
    parser.add_argument("command", choices=("serve",))
    parser.add_argument("port", type=int)
    parser.add_argument("idle_s", type=float)
    args = parser.parse_args(argv)
    return serve(args.port, args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
