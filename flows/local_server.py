"""A local Prefect server that outlives runs: `stepedit server start` starts it, every later
`stepedit run` on this machine uses it instead of starting Prefect's temporary server (which
costs several seconds per run), `stepedit server stop` stops it.

It is opt-in: without it a run starts and stops its own temporary server, and everything a run
starts stays its child (the watchdog stops it after a SIGKILL). The server started here is
not a run's child, so no run stops it. Its state file sits in the Prefect home
(`$PREFECT_HOME`, default ~/.prefect), next to the database it serves, so runs with another
Prefect home never use it. A run uses it only while PREFECT_API_URL is unset, its process is
alive and it answers its health check.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from stepedit_core.lease import pid_alive

STATE_NAME = "stepedit-server.json"
START_TIMEOUT_S = 180.0  # a fresh Prefect home builds its database first


def prefect_home() -> Path:
    """Prefect's home as Prefect resolves it, without importing Prefect (a run must set
    PREFECT_API_URL before Prefect reads its settings)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def state_file() -> Path:
    return prefect_home() / STATE_NAME


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def running() -> dict | None:
    """The server's state ({"pid", "api_url", "started"}) when it runs and answers; else None."""
    try:
        state = json.loads(state_file().read_text())
        pid, api_url = int(state["pid"]), str(state["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pid_alive(pid) or not _healthy(api_url):
        return None
    return state


def use_for_this_run() -> str | None:
    """Point this process at the local server when one runs (PREFECT_API_URL unset); returns its
    API URL. Must be called before Prefect is imported."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    state = running()
    if state is None:
        return None
    os.environ["PREFECT_API_URL"] = state["api_url"]
    return state["api_url"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start() -> dict:
    """Start the server (or return the one already running) and wait until it answers."""
    state = running()
    if state is not None:
        return {**state, "already_running": True}
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    with open(home / "stepedit-server.log", "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],  # fmt: skip
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives this command and a terminal's Ctrl-C
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _healthy(api_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_group(proc.pid)
            raise RuntimeError(
                f"the Prefect server did not come up; its output: {home / 'stepedit-server.log'}"
            )
        time.sleep(0.5)
    state = {"pid": proc.pid, "api_url": api_url, "started": time.time()}
    state_file().write_text(json.dumps(state))
    return state


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
    was running). A stale state file is removed either way; a process that does not answer as
    the server is left alone."""
    state = running()  # a pid that no longer answers as the server may be another process now
    if state is not None:
        _stop_group(int(state["pid"]))
    state_file().unlink(missing_ok=True)
    return state
