"""What a detached keeper and the runs that use it share, for the local Prefect server
(local_server.py) and the shared local Ray cluster (local_ray.py).

Both live in the Prefect home under one prefix (`stepedit-server`, `stepedit-ray`) and
coordinate through files rather than a daemon protocol:

- `PREFIX.lock`: held exclusively to look for the service and start one, so two runs starting
  at once start one between them;
- `PREFIX.users`: every run using the service holds a shared lock on it while it runs (the
  kernel drops it when the run ends, however it ends); the keeper counts the service idle only
  while it can take the lock exclusively.

The keeper itself is detached from whoever started it (`detach`): nobody's child, in a session
of its own, so neither a terminal's Ctrl-C nor the reaper of the run that started it stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def prefect_home() -> Path:
    """Prefect's home as Prefect resolves it, without importing Prefect (a run must set
    PREFECT_API_URL before Prefect reads its settings)."""
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


class KeeperFiles:
    """The coordination files of one kind of keeper, `prefect_home()/PREFIX.*`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._users_lock: IO[bytes] | None = None  # this process's shared lock, once taken

    def path(self, suffix: str) -> Path:
        return prefect_home() / f"{self.prefix}.{suffix}"

    @contextlib.contextmanager
    def start_lock(self) -> Iterator[None]:
        prefect_home().mkdir(parents=True, exist_ok=True)
        with open(self.path("lock"), "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def hold_users_lock(self) -> None:
        """Mark this process as a user of the service until it exits."""
        if self._users_lock is None:
            self._users_lock = open(self.path("users"), "ab")  # noqa: SIM115 - held until exit
            fcntl.flock(self._users_lock, fcntl.LOCK_SH)

    def in_use(self) -> bool:
        """Whether a run holds the users lock (shared) now."""
        with open(self.path("users"), "ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def detach(log_file: Path) -> None:
    """Fork; the parent prints the child's pid and exits, the child leads a session (and
    process group) of its own with its output in `log_file`."""
    child = os.fork()
    if child:
        sys.stdout.write(f"{child}\n")
        sys.stdout.flush()
        os._exit(0)
    os.setsid()
    with open(log_file, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    with open(os.devnull, "rb") as null:
        os.dup2(null.fileno(), 0)


class KeeperStopped(Exception):
    """SIGTERM reached a keeper (`stepedit server stop`, `stepedit ray stop`)."""


def stop_keeper_on_sigterm() -> None:
    """From now on SIGTERM raises KeeperStopped in the keeper, once."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut it short
        raise KeeperStopped

    signal.signal(signal.SIGTERM, stop)
