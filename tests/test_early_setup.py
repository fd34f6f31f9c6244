"""An in-process run's models set up in the background while the run starts: the executor's
`prepare` and the run's take-over of a setup begun for its job (early_setup.py). The setup
happens once, off the main thread, and its errors are the run's errors, as without it."""

from __future__ import annotations

import json
import threading

import pytest

from stepedit_core.engines import EngineNotReady
from stepedit_core.engines.signal.engine import SignalEditStage
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.stages import Stage
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle import early_setup
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job

from conftest import write_clip, write_manifest

SETUP_THREAD = "stepedit-setup"


class Loader(Stage):
    """A model stage that notes the thread of each setup (or fails it)."""

    def __init__(self, name: str, error: Exception | None = None) -> None:
        self.name, self.error = name, error
        self.threads: list[str] = []

    def setup(self) -> None:
        self.threads.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error


def setup_threads_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == SETUP_THREAD]


def test_prepared_stages_are_set_up_once_in_the_background():
    first, second, late = Loader("first"), Loader("second"), Loader("late")
    executor = LocalExecutor()
    executor.prepare([first, second, first])
    assert list(executor.run([first, second, late], [])) == []
    assert first.threads == second.threads == [SETUP_THREAD]
    assert late.threads == [threading.current_thread().name]  # not prepared: set up by run
    assert executor.setups == {"first": 1, "second": 1, "late": 1}
    assert not setup_threads_alive()
    list(executor.run([first, second, late], []))  # a second run loads nothing again
    assert executor.setups == {"first": 1, "second": 1, "late": 1}


def test_a_failed_background_setup_is_raised_by_run_as_the_setup_error():
    broken = Loader("broken", EngineNotReady("model folder /models/x is missing"))
    after = Loader("after")
    executor = LocalExecutor()
    executor.prepare([broken, after])
    with pytest.raises(EngineNotReady, match="model folder /models/x is missing"):
        list(executor.run([broken, after], []))
    assert not setup_threads_alive()
    assert after.threads == []  # the setup stopped at the first failure
    # run again (a retried step): the stage is set up again, in the run's thread, and fails
    with pytest.raises(EngineNotReady, match="model folder /models/x is missing"):
        list(executor.run([broken, after], []))
    assert broken.threads == [SETUP_THREAD, threading.current_thread().name]


def test_stages_are_prepared_once_at_a_time():
    executor = LocalExecutor()
    executor.prepare([Loader("a")])
    with pytest.raises(RuntimeError, match="already being set up"):
        executor.prepare([Loader("b")])
    executor.wait_prepared()


def one_clip_job(tmp_path, run_id: str, executor: str = "local") -> JobSpec:
    clip = write_clip(tmp_path / "c0.wav", 0.5)
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "c0", "audio_uri": clip}])
    return JobSpec(
        manifest_uri=manifest,
        out=str(tmp_path / "runs"),
        run_id=run_id,
        edits=["speed=faster"],
        executor=executor,
        report="none",
    )


@pytest.fixture
def setup_threads(monkeypatch):
    """The thread names of the signal stage's setups."""
    seen: list[str] = []
    real = SignalEditStage.setup

    def noting(stage: SignalEditStage) -> None:
        seen.append(threading.current_thread().name)
        real(stage)

    monkeypatch.setattr(SignalEditStage, "setup", noting)
    yield seen
    early_setup.discard()


def test_a_run_takes_over_the_setup_started_for_its_job(tmp_path, setup_threads):
    job = one_clip_job(tmp_path, "early")
    started = early_setup.start(job)
    assert started is not None
    record = run_job(job)
    assert record["counts"]["ok"] == 1
    assert setup_threads == [SETUP_THREAD]  # loaded once, in the background
    assert not setup_threads_alive()
    plain = run_job(one_clip_job(tmp_path, "plain"), executor=LocalExecutor())
    stored = RunStore(job.out, "early")
    assert json.loads(stored.read_bytes(stored.run_json))["setups"] == plain["setups"]
    assert early_setup.take(job) is None  # handed over once


def test_a_failing_early_setup_fails_the_run_with_the_same_error(tmp_path, monkeypatch):
    def missing(stage: SignalEditStage) -> None:
        raise EngineNotReady("silero-vad is not installed")

    monkeypatch.setattr(SignalEditStage, "setup", missing)
    with pytest.raises(EngineNotReady) as without:
        run_job(one_clip_job(tmp_path, "plain"), executor=LocalExecutor())
    job = one_clip_job(tmp_path, "early")
    early_setup.start(job)
    try:
        with pytest.raises(EngineNotReady) as early:
            run_job(job)
    finally:
        early_setup.discard()
    assert str(early.value) == str(without.value) == "silero-vad is not installed"
    assert not setup_threads_alive()


def test_a_setup_is_only_for_its_own_job_and_ends_with_discard(tmp_path, setup_threads):
    job = one_clip_job(tmp_path, "mine")
    assert early_setup.start(one_clip_job(tmp_path, "ray", executor="ray")) is None
    started = early_setup.start(job)
    assert early_setup.take(one_clip_job(tmp_path, "other")) is None
    assert early_setup.take(job.model_copy()) is started  # an equal job is the same job
    early_setup.discard()  # the run never ran its stages: the thread still ends here
    assert not setup_threads_alive()
    assert early_setup.take(job) is None


def test_a_stopped_run_does_not_wait_for_its_models_to_load(tmp_path, monkeypatch):
    loading, release = threading.Event(), threading.Event()

    def slow(stage: SignalEditStage) -> None:
        loading.set()
        release.wait(timeout=60)

    monkeypatch.setattr(SignalEditStage, "setup", slow)
    job = one_clip_job(tmp_path, "stopped")
    early_setup.start(job)
    assert loading.wait(timeout=60)
    early_setup.discard(wait=False)  # returns while the model still loads
    (thread,) = setup_threads_alive()
    assert early_setup.take(job) is None
    release.set()
    thread.join(timeout=60)  # and the thread ends by itself once it has loaded
    assert not thread.is_alive()
