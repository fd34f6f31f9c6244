"""Run-wide progress: clips done of the clips planned, and failures so far, across shards.

Shards report their own counts (a retried shard starts again from zero); `RunProgress` sums
them into one view of the whole run and hands it to a sink, such as the command line's
progress bar. The sink is installed for the duration of a run with `reporting`, because the
run's steps execute inside an orchestrator (Prefect tasks) that does not pass arbitrary
objects along; without one, reports go nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    def update(self, done: int, total: int, failed: int) -> None: ...


class RunProgress:
    """Sums per-shard counts into (done, total, failed) for the whole run."""

    def __init__(self, sink: ProgressSink | None = None) -> None:
        self.sink = sink
        self.total = 0
        self._shards: dict[int, tuple[int, int]] = {}

    def planned(self, total: int) -> None:
        """The number of clips the run will edit (rows refused at plan time are not clips)."""
        self.total = total
        self._shards.clear()
        self._emit()

    def shard(self, shard: int, done: int, failed: int) -> None:
        self._shards[shard] = (done, failed)
        self._emit()

    @property
    def done(self) -> int:
        return sum(d for d, _ in self._shards.values())

    @property
    def failed(self) -> int:
        return sum(f for _, f in self._shards.values())

    def _emit(self) -> None:
        if self.sink is not None:
            self.sink.update(self.done, self.total, self.failed)


_current = RunProgress()


def run_progress() -> RunProgress:
    """The progress of the run under way (a no-op sink when nobody is watching)."""
    return _current


@contextmanager
def reporting(sink: ProgressSink) -> Iterator[RunProgress]:
    """Send the progress of runs started inside the block to `sink`."""
    global _current
    previous, _current = _current, RunProgress(sink)
    try:
        yield _current
    finally:
        _current = previous
