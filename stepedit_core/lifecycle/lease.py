"""One attempt per run id at a time: a lease object in the run folder, renewed while it runs.

The holder writes `_work/lease.json` (who, since when, renewed at) and renews it every
`RENEW_S`. A second attempt is refused while the lease is fresh; a lease that was not renewed
for `TTL_S` (its holder died, or its machine did) expires and the next attempt takes it over.
On the holder's own machine a dead holder process is noticed at once.

Leases are fenced: a holder that was paused (SIGSTOP, a frozen VM) past the TTL may find its
lease taken by another attempt when it continues. Its renewal reads the lease first and never
writes over another holder's token (nor brings its own back after a pause between that read
and its write); every commit checks the token too (`RunStore.check_fence`),
so an attempt that lost its lease commits nothing more and stops with `LeaseLost`.
`STEPEDIT_LEASE_TTL_S` and `STEPEDIT_LEASE_RENEW_S` change the timings (tests use seconds).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.store import RunStore

TTL_S = 30.0
RENEW_S = 5.0
TTL_ENV, RENEW_ENV = "STEPEDIT_LEASE_TTL_S", "STEPEDIT_LEASE_RENEW_S"


def ttl_s() -> float:
    return float(os.environ.get(TTL_ENV) or TTL_S)


def renew_s() -> float:
    return float(os.environ.get(RENEW_ENV) or RENEW_S)


class RunBusy(RunRefused):
    """Another live attempt holds this run id."""


class LeaseLost(BaseException):
    """This attempt no longer holds its run id's lease: another attempt took it over. A
    BaseException, like a stop, so no retry or per-item handler carries on committing."""

    exit_status = 4


def _now_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_problem(store: RunStore, now: float | None = None) -> str | None:
    """Why this run id is busy (naming the holder and since when), or None when it is free."""
    if not store.exists(store.lease):
        return None
    try:
        lease = store.read_json(store.lease)
    except (ValueError, OSError):
        return None  # unreadable lease: treat as expired
    now = time.time() if now is None else now
    if now - float(lease.get("renewed", 0)) > ttl_s():
        return None
    if lease.get("host") == socket.gethostname() and not pid_alive(int(lease.get("pid", -1))):
        return None
    return (
        f"run {store.run_id!r} is being run by {lease.get('holder')} since "
        f"{lease.get('since_iso')} (lease renewed {now - float(lease['renewed']):.0f} s ago; "
        f"it expires {ttl_s():.0f} s after its holder stops renewing it)"
    )


class Lease:
    """Hold the run id's lease for the life of a `with` block (renewed in the background)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.since = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: str | None = None  # why this attempt no longer holds the lease

    def _payload(self) -> dict:
        return {
            "holder": f"{self.host}:{self.pid}",
            "host": self.host,
            "pid": self.pid,
            "token": self.token,
            "since": self.since,
            "since_iso": _now_iso(self.since),
            "renewed": time.time(),
        }

    def acquire(self) -> None:
        problem = holder_problem(self.store)
        if problem is not None:
            raise RunBusy(problem)
        self.store.write_json(self.store.lease, self._payload())
        # two attempts that raced past the check: the last writer wins, the other backs off
        time.sleep(0.2)
        if self.store.read_json(self.store.lease).get("token") != self.token:
            raise RunBusy(holder_problem(self.store) or f"run {self.store.run_id!r} was taken")
        self.store.fence = self
        self._thread = threading.Thread(target=self._renew, name="stepedit-lease", daemon=True)
        self._thread.start()

    def _holder(self) -> dict | None:
        try:
            return self.store.read_json(self.store.lease)
        except FileNotFoundError:
            return None

    def _notice_loss(self, current: dict | None) -> None:
        if current is None:
            self.lost = "its lease.json was removed (another attempt took the run over and ended)"
        else:
            self.lost = f"{current.get('holder')} took the lease over at {current.get('since_iso')}"

    def renew_once(self) -> None:
        """Renew, unless another holder's token is in the lease: then only note the loss."""
        read_at = time.time()
        current = self._holder()
        if current is None or current.get("token") != self.token:
            self._notice_loss(current)
            return
        # A pause between the read and the write (SIGSTOP, a frozen VM) makes the read stale:
        # past the TTL another attempt may have taken the lease over and even released it
        # since, and writing now would bring this holder's lease back over that takeover.
        stalled = time.time() - read_at
        if stalled > ttl_s():
            self.lost = (
                f"its renewal stalled {stalled:.0f} s between reading and writing the lease, "
                f"longer than the lease's {ttl_s():g} s TTL"
            )
            return
        self.store.write_json(self.store.lease, self._payload())

    def _renew(self) -> None:
        while self.lost is None and not self._stop.wait(renew_s()):
            try:
                self.renew_once()
            except Exception:  # noqa: BLE001 - a missed renewal is retried on the next tick
                continue

    def check(self, read: bool = True) -> None:
        """Raise LeaseLost when this attempt no longer holds the lease. `read=False` only looks
        at what the renewal noticed (no I/O: cheap enough for every finished item)."""
        if self.lost is None and read:
            current = self._holder()
            if current is None or current.get("token") != self.token:
                self._notice_loss(current)
        if self.lost is not None:
            raise LeaseLost(
                f"run {self.store.run_id!r}: this attempt ({self.host}:{self.pid}) lost its "
                f"lease: {self.lost}; it stopped and committed nothing more"
            )

    def release(self) -> None:
        self._stop.set()
        if self.store.fence is self:
            self.store.fence = None
        if self._thread is not None:
            self._thread.join(timeout=renew_s())
        try:
            if self.store.read_json(self.store.lease).get("token") == self.token:
                self.store.remove([self.store.lease])
        except (OSError, ValueError):
            pass

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
