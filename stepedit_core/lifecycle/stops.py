"""Clean stops: Ctrl-C (SIGINT) or SIGTERM ends a run quickly, says where it stopped, and exits
with 128 + the signal number (130, 143), the shell convention that schedulers understand.

A stop travels as an exception through whatever is running (a Prefect task, Ray Data's
iterator, the local loop), so every `finally` and `atexit` hook still runs and the processes the
run started are shut down on the way out. Orchestrators install their own SIGTERM handler while a
flow runs (Prefect raises its own termination exception carrying the signal number); `stop_signal`
recognises those too, so the run is reported as stopped whoever caught the signal first.

`OUT/RUN_ID/_work/stopped.json` records when, which signal, the step that was running (name,
arguments, since when) and what was already durable (finished shards, round part files), so an
operator can see how far the run got before starting it again.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import FrameType
from typing import Any

from stepedit_core.foundation.store import RunStore

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The steps `run_job` calls, in order; tracked so a stop can name the one that was running.
RUN_STEPS = ("validate", "begin", "plan", "run_shards", "merge", "finish")


class RunStopped(BaseException):
    """The run was stopped by a signal. A BaseException, like KeyboardInterrupt, so that the
    `except Exception` of retries and per-item error handling never swallows a stop."""

    def __init__(self, signum: int, record: dict[str, Any] | None = None) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.record = record

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    def describe(self) -> str:
        """One line for the user: the signal, the step it interrupted, where the record is."""
        record = self.record or {}
        step = record.get("step")
        where = f"during the {step} step" if step else "before the first step"
        return f"{self} {where}; details in {STOPPED_JSON}"


def exit_status(signum: int) -> int:
    """The shell's exit status for a process ended by `signum`: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


def stop_signal(exc: BaseException) -> int | None:
    """The stop signal an exception stands for, or None if it is not a stop. Looks through
    `__cause__`/`__context__`, since a framework may re-raise a stop wrapped in its own error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, RunStopped):
            return current.signum
        if isinstance(current, KeyboardInterrupt):
            return signal.SIGINT
        # Orchestrators' own termination exceptions (e.g. Prefect's TerminationSignal) carry
        # the number as `.signal`; matched by attribute so the library never imports them.
        number = getattr(current, "signal", None)
        is_signal_like = not isinstance(current, Exception)  # a BaseException, like theirs
        if is_signal_like and isinstance(number, int) and number in STOP_SIGNALS:
            return number
        current = current.__cause__ or current.__context__
    return None


# what is running --------------------------------------------------------------------------
@dataclass
class RunActivity:
    """The run step in progress, kept so that a stop can say what it interrupted."""

    step: str | None = None
    args: tuple[Any, ...] = ()
    since: float | None = None
    finished: list[str] = field(default_factory=list)

    def enter(self, step: str, args: tuple[Any, ...]) -> None:
        self.step, self.args, self.since = step, args, time.time()

    def leave(self) -> None:
        if self.step is not None:
            self.finished.append(self.step)
        self.step, self.args, self.since = None, (), None

    def describe(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "args": [_plain(a) for a in self.args],
            "step_started_at": _iso(self.since) if self.since else None,
            "steps_finished": list(self.finished),
        }

    def track(self, wrappers: Mapping[str, Callable[..., Any]] | None) -> dict[str, Callable]:
        """Step wrappers for `run_job` that note each step here, around the given wrappers
        (e.g. Prefect tasks); a step without a wrapper runs the plain `RunSteps` method.
        Called once per run: it starts the activity afresh."""
        wrappers = dict(wrappers or {})
        self.step, self.args, self.since, self.finished = None, (), None, []

        def tracked(name: str) -> Callable[..., Any]:
            inner = wrappers.get(name)

            def run(steps: Any, *args: Any) -> Any:
                self.enter(name, args)
                result = inner(steps, *args) if inner else getattr(steps, name)(*args)
                self.leave()  # only on success: after a stop, `step` still names the step
                return result

            return run

        return {name: tracked(name) for name in {*RUN_STEPS, *wrappers}}


# one per process: a command runs one job at a time, and the Prefect flow reads it by name
ACTIVITY = RunActivity()


# what a stop leaves behind ----------------------------------------------------------------
STOPPED_JSON = "_work/stopped.json"  # under OUT/RUN_ID: `RunStore.stopped`


def durable_progress(store: RunStore) -> dict[str, Any]:
    """What is already written for the run: shards whose results exist, round part files."""
    results = [posixpath.basename(p) for p in store.list(store.results_dir(), prefix="shard-")]
    parts = store.list(store.iterations_dir)
    return {"shard_results": results, "iteration_parts": len(parts)}


def record_stop(
    store: RunStore, signum: int, activity: RunActivity | None = None
) -> dict[str, Any]:
    """Write `_work/stopped.json` and return what was written. Never raises: a stop must still
    exit even when the output is unreachable (the error is kept in the returned record)."""
    activity = activity or ACTIVITY
    record: dict[str, Any] = {
        "run_id": store.run_id,
        "stopped_at": _iso(time.time()),
        "signal": signal.Signals(signum).name,
        "signal_number": signum,
        "exit_status": exit_status(signum),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **activity.describe(),
    }
    try:
        record["written"] = durable_progress(store)
        store.write_json(store.stopped, record)
    except Exception as exc:  # noqa: BLE001 - report, never mask the stop
        record["record_error"] = f"{type(exc).__name__}: {exc}"
    return record


# signal handlers --------------------------------------------------------------------------
# The last stop signal this process received. A handler's exception is lost when the signal
# lands inside a C callback (soundfile reading a file object through Python prints "Exception
# ignored from cffi callback" and goes on), so loops also look here between batches.
_pending: int | None = None


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = signum
    raise RunStopped(signum)


def check_stop() -> None:
    """Raise the stop a signal asked for if its exception was swallowed on the way."""
    if _pending is not None:
        raise RunStopped(_pending)


@contextlib.contextmanager
def remember_stops() -> Iterator[None]:
    """For the block, note every SIGINT/SIGTERM before the handler installed now (ours or an
    orchestrator's) runs, so `check_stop` sees a stop whose exception was lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}

    def noted(signum: int, frame: FrameType | None) -> None:
        global _pending
        _pending = signum
        handler = saved[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise RunStopped(signum)

    with keep_signal_handlers():  # the handlers in place now come back after the block
        for s in saved:
            signal.signal(s, noted)
        yield


@contextlib.contextmanager
def stop_on_signals(store: RunStore, activity: RunActivity | None = None) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into a `RunStopped` raised in the main thread for the duration
    of the block; on any stop (ours or an orchestrator's), write stopped.json and re-raise as
    `RunStopped` with the record. Outside the main thread, signals can not be handled: the
    block runs unguarded."""
    global _pending
    _pending = None
    in_main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS} if in_main else {}
    for s in previous:
        signal.signal(s, _raise_stop)
    try:
        yield
    except BaseException as exc:
        signum = stop_signal(exc)
        if signum is None:
            raise
        # a second Ctrl-C while the record is written must not lose it
        with _signals_ignored(previous):
            record = record_stop(store, signum, activity)
        _release_frames(exc)
        raise RunStopped(signum, record) from exc
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _release_frames(exc: BaseException) -> None:
    """Drop the interrupted frames' locals (a shard's audio, engine objects): an orchestrator
    may keep the exception in its run state until exit, and those locals would then outlive
    their modules at interpreter shutdown (native extensions report that as leaks)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__


@contextlib.contextmanager
def _signals_ignored(signums: Mapping[int, Any]) -> Iterator[None]:
    for s in signums:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s in signums:
            signal.signal(s, _raise_stop)


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Restore SIGINT/SIGTERM handlers a library call replaces. A local Ray head installs a
    SIGTERM handler that drains the node for up to 30 s and exits 1; keeping the caller's own
    makes a stop quick and reported as a stop (Ray still stops its processes at exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in saved.items():
            if handler is not None:
                signal.signal(s, handler)


def _plain(value: Any) -> Any:
    """A step argument as JSON: numbers and text as they are, short lists of them (shard
    numbers) too, anything else (validation and plan objects) by its type name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, str)) for v in value):
        return list(value) if len(value) <= 100 else [*value[:100], f"... {len(value)} in all"]
    return type(value).__name__


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="milliseconds")
