"""Prefect's temporary API server, started outside the terminal's process group.

Ctrl-C in a terminal sends SIGINT to every process of the foreground group. Prefect starts its
temporary server (when no PREFECT_API_URL is set) as a plain child, so the same Ctrl-C stops the
server at once, and the run, reporting its stop to a server that is gone, then waits about a
minute on Prefect's client retries before it can exit. Started in a session of its own, the
server only stops when the run's exit hooks stop it (or the watchdog, after SIGKILL), so a stop
takes seconds. It stays the run's child: the watchdog still finds it.
"""

from __future__ import annotations

import contextlib
import subprocess
import types
from collections.abc import Iterator
from typing import Any


class _OwnSession(subprocess.Popen):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("start_new_session", True)
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def _children_in_own_session(module: types.ModuleType) -> Iterator[None]:
    """While the block runs, processes `module` starts through `subprocess.Popen` get their own
    session. Only that module's view of `subprocess` changes; the rest of the process is as is."""
    real = module.subprocess
    proxy = types.ModuleType("subprocess")
    proxy.__dict__.update(real.__dict__)
    proxy.Popen = _OwnSession
    module.subprocess = proxy
    try:
        yield
    finally:
        module.subprocess = real


def start_temporary_server() -> bool:
    """Start Prefect's temporary server now, in its own session; returns whether it did.
    Does nothing when a server is configured (PREFECT_API_URL) or temporary servers are off.
    The flow then uses this server: Prefect keeps one temporary server per process."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return False
    from prefect.server.api import server

    if not hasattr(server, "subprocess"):  # another Prefect layout: let the flow start it
        return False
    with _children_in_own_session(server):
        server.SubprocessASGIServer().start()
    return True
