"""A run's memory must not grow with the catalog: once an item's part and audio are committed,
nothing of its audio may stay reachable, even when the executor hands back the very objects the
run holds for its whole length (the in-process executor does)."""

from __future__ import annotations

from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job

from conftest import write_clip, write_manifest


class KeepingExecutor(LocalExecutor):
    """The in-process executor, remembering every item it handed back."""

    def __init__(self) -> None:
        super().__init__()
        self.handed_back: list = []

    def run(self, stages, items):
        for item in super().run(stages, items):
            self.handed_back.append(item)
            yield item


def test_committed_items_keep_no_audio(tmp_path):
    rows = [
        {"clip_id": f"m{i}", "audio_uri": write_clip(tmp_path / f"m{i}.wav", 0.5, f0=150.0 + i)}
        for i in range(5)
    ]
    job = JobSpec(
        manifest_uri=write_manifest(tmp_path / "m.parquet", rows),
        out=str(tmp_path / "runs"),
        run_id="memory",
        edits=list(parse_chain("loudness=-23")),
        iterations=2,
        executor="local",
        shard_size=2,
    )
    executor = KeepingExecutor()
    record = run_job(job, executor=executor)
    assert record["counts"]["ok"] == 5 and record["clip_rounds"]["done_now"] == 10
    assert len(executor.handed_back) == 5
    for item in executor.handed_back:
        assert item.audio is None and item.original is None and item.output is None
        assert item.sealed.count == 0 and item.sealed.last is None
