"""Run-wide progress: clips done of the clips to edit in this attempt, and failures so far.

The shard runner reports `(done, total, failed)` for the whole run; `RunProgress` hands it to a
sink, such as the command line's progress bar. The sink is installed for the duration of a run
with `reporting`, because the run's steps execute inside an orchestrator (Prefect tasks) that
does not pass arbitrary objects along; without one, reports go nowhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class ProgressSink(Protocol):
    def update(self, done: int, total: int, failed: int) -> None: ...


class RunProgress:
    """Forwards the run's counts to a sink (or nowhere)."""

    def __init__(self, sink: ProgressSink | None = None) -> None:
        self.sink = sink

    def update(self, done: int, total: int, failed: int) -> None:
        if self.sink is not None:
            self.sink.update(done, total, failed)


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
