"""A signal engine whose edit stage kills its worker process on one marked clip, the way a
native crash (a segfault in a codec, the OOM killer) would. Each batch the stage sees is logged
to a file first, so a test can tell which batches were retried and on which process."""

from __future__ import annotations

import json
import os
from typing import Any

from stepedit_core.engines.signal.engine import SignalEditStage, SignalEngine
from stepedit_core.foundation.stages import Stage, WorkItem

KILLER = "boom"


class DyingEditStage(SignalEditStage):
    def __init__(self, log_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.log_path = log_path

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        with open(self.log_path, "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "clips": [i.clip_id for i in items]}))
            log.write("\n")
        if any(item.clip_id == KILLER for item in items):
            os._exit(1)  # no exception, no cleanup: the process is simply gone
        return super().process_batch(items)


class DyingEngine(SignalEngine):
    log_path = ""

    def build_stages(self) -> list[Stage]:
        return [DyingEditStage(self.log_path, batch_size=4)]
