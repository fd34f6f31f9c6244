"""In-process executor: the same stages, one after another, in this process.

Used by tests, for debugging, and as the baseline the Ray executor's overhead is measured against.

A run that knows its stages before its items are ready can have their models set up ahead, in
a background thread (`prepare`): loading the models and what runs them (onnxruntime; torch
for the model engine) then overlaps what the run waits for meanwhile (its orchestrator's API
calls, the lease). `run` waits for that setup and raises what it raised, as it would have
raised its own setup's error.
"""

from __future__ import annotations

import threading
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


def _model_stages(stages: list[Stage]) -> list[Stage]:
    """The stages that load models (each once, however often it is listed), in order."""
    return [s for s in {id(s): s for s in stages}.values() if s.needs_actor]


class LocalExecutor:
    name = "local"

    def __init__(self, chunk_size: int = 64) -> None:
        # Items are pushed through all stages a chunk at a time, so memory stays bounded by
        # the chunk, not the shard.
        self.chunk_size = chunk_size
        self.setups: dict[str, int] = {}  # stage name -> setup() calls, for run.json
        self._ready: set[int] = set()
        self._prepared: set[int] = set()  # stages the background setup finished
        self._preparing: threading.Thread | None = None
        self._prepare_error: BaseException | None = None

    def prepare(self, stages: list[Stage]) -> None:
        """Set up these stages' models in a background thread now; `run` waits for it. Stages
        are set up in order, and the first that fails ends the setup: `run` raises its error."""
        if self._preparing is not None:
            raise RuntimeError("the stages are already being set up")
        todo = [s for s in _model_stages(stages) if id(s) not in self._ready]

        def set_up() -> None:
            try:
                for stage in todo:
                    stage.setup()
                    self._prepared.add(id(stage))
            except BaseException as exc:  # noqa: BLE001 - raised again by `run`, in its thread
                self._prepare_error = exc

        self._preparing = threading.Thread(target=set_up, name="stepedit-setup", daemon=True)
        self._preparing.start()

    def wait_prepared(self) -> None:
        """Wait until the background setup (`prepare`) ends; raise what it raised. The thread
        has ended when this returns or raises."""
        thread, self._preparing = self._preparing, None
        if thread is None:
            return
        thread.join()
        error, self._prepare_error = self._prepare_error, None
        if error is not None:
            raise error

    def run(self, stages: list[Stage], items: Iterable[WorkItem]) -> Iterator[WorkItem]:
        self.wait_prepared()
        # Engines hand out the same stage objects for every round: load each model once, and
        # once per executor, however many times it is asked to run.
        for stage in _model_stages(stages):
            if id(stage) in self._ready:
                continue
            if id(stage) not in self._prepared:
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
