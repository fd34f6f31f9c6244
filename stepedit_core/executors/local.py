"""In-process executor: the same stages, one after another, in this process.

Used by tests, for debugging, and as the baseline the Ray executor's overhead is measured against.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from stepedit_core.foundation.stages import Stage, WorkItem
from stepedit_core.lifecycle.stops import check_stop


def _batches(items: Iterable[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    batch: list[WorkItem] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class LocalExecutor:
    name = "local"

    def __init__(self, chunk_size: int = 64) -> None:
        # Items are pushed through all stages a chunk at a time, so memory stays bounded by
        # the chunk, not the shard.
        self.chunk_size = chunk_size
        self.setups: dict[str, int] = {}  # stage name -> setup() calls, for run.json
        self._ready: set[int] = set()

    def run(self, stages: list[Stage], items: Iterable[WorkItem]) -> Iterator[WorkItem]:
        # Engines hand out the same stage objects for every round: load each model once, and
        # once per executor, however many times it is asked to run.
        for stage in {id(s): s for s in stages}.values():
            if id(stage) in self._ready or not stage.needs_actor:
                continue
            stage.setup()
            self._ready.add(id(stage))
            self.setups[stage.name] = self.setups.get(stage.name, 0) + 1
        for chunk in _batches(items, self.chunk_size):
            for stage in stages:
                done: list[WorkItem] = []
                for batch in _batches(chunk, max(1, stage.batch_size)):
                    done.extend(stage.process_batch(batch))
                    check_stop()  # between batches: a swallowed stop is not left for a chunk
                chunk = done
            yield from chunk
