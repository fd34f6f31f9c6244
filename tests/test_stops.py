"""Clean stops in-process: a signal becomes `RunStopped`, and stopped.json says where it hit."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.stops import (
    RunActivity,
    RunStopped,
    keep_signal_handlers,
    stop_on_signals,
    stop_signal,
)


class OrchestratorTermination(BaseException):
    """Shaped like an orchestrator's own termination exception (Prefect's TerminationSignal)."""

    def __init__(self, number: int) -> None:
        self.signal = number


class NotAStop(Exception):
    signal = signal.SIGTERM  # an ordinary error that happens to have the attribute


def test_stop_signal_recognises_stops_and_nothing_else():
    assert stop_signal(KeyboardInterrupt()) == signal.SIGINT
    assert stop_signal(RunStopped(signal.SIGTERM)) == signal.SIGTERM
    assert stop_signal(OrchestratorTermination(signal.SIGTERM)) == signal.SIGTERM
    wrapped = RuntimeError("task crashed")
    wrapped.__cause__ = OrchestratorTermination(signal.SIGINT)
    assert stop_signal(wrapped) == signal.SIGINT
    assert stop_signal(NotAStop()) is None
    assert stop_signal(ValueError("bad row")) is None
    assert RunStopped(signal.SIGINT).exit_status == 130
    assert RunStopped(signal.SIGTERM).exit_status == 143


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_in_a_step_writes_stopped_json_and_raises(tmp_path, signum):
    store = RunStore(str(tmp_path), "r1")
    store.write_bytes(store.shard_results(0), b"x.parquet")  # what finished before the stop
    activity = RunActivity(step="merge", finished=["validate"])  # left from an earlier run
    steps = activity.track({})

    class Steps:
        def plan(self):
            return "planned"

        def run_shards(self, shards, sharding):
            os.kill(os.getpid(), signum)
            time.sleep(60)  # the handler interrupts this
            raise AssertionError("not stopped")

    before = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(RunStopped) as stopped, stop_on_signals(store, activity):
        assert steps["plan"](Steps()) == "planned"
        steps["run_shards"](Steps(), [1, 2], object())
    assert time.monotonic() - started < 30  # interrupted, not slept out (load-proof)
    assert stopped.value.signum == signum
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    written = json.loads((tmp_path / "r1" / "_work" / "stopped.json").read_text())
    assert written == stopped.value.record
    assert written["signal"] == signal.Signals(signum).name
    assert written["exit_status"] == 128 + signum
    assert written["step"] == "run_shards" and written["args"] == [[1, 2], "object"]
    assert written["steps_finished"] == ["plan"]
    assert written["written"] == {"shard_results": ["shard-00000.parquet"], "iteration_parts": 0}
    name = signal.Signals(signum).name
    assert stopped.value.describe() == (
        f"stopped by {name} during the run_shards step; details in _work/stopped.json"
    )


def test_other_errors_pass_through_without_a_record(tmp_path):
    store = RunStore(str(tmp_path), "r1")
    with pytest.raises(ValueError), stop_on_signals(store):
        raise ValueError("a crash is not a stop")
    assert not (tmp_path / "r1" / "_work" / "stopped.json").exists()


def test_keep_signal_handlers_undoes_a_library_replacing_them():
    def mine(signum, frame):
        raise RunStopped(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with keep_signal_handlers():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # what a local Ray head does
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_stop_whose_exception_was_swallowed_is_still_seen(monkeypatch):
    """A signal that lands inside a C callback (soundfile reading a file object) has its
    exception printed and dropped; loops find the stop through check_stop all the same."""
    import contextlib
    import signal as signals

    from stepedit_core.lifecycle import stops

    monkeypatch.setattr(stops, "_pending", None)

    def orchestrators(signum, frame):
        raise RuntimeError("an orchestrator's own termination exception")

    previous = signals.signal(signals.SIGTERM, orchestrators)
    try:
        with stops.remember_stops():
            stops.check_stop()  # nothing asked yet
            with contextlib.suppress(RuntimeError):  # lost on the way, as in a C callback
                signals.raise_signal(signals.SIGTERM)
            with pytest.raises(stops.RunStopped) as stopped:
                stops.check_stop()
            assert stopped.value.signum == signals.SIGTERM
        assert signals.getsignal(signals.SIGTERM) is orchestrators  # restored
    finally:
        signals.signal(signals.SIGTERM, previous)
