"""Work items for tests, made the way a run makes them: a `ClipSpec` of the row's fields and
the round's facts on the item; and stages run over them outside a shard, with the records
their rounds handed to the round channel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stepedit_core.catalog.records import RoundRecord
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.clip_spec import ClipSpec
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.foundation.stages import Stage, WorkItem
from stepedit_core.lifecycle.round_handoff import RoundRecordStore, take_records
from stepedit_core.lifecycle.rounds import RoundEnd

SPEC_FIELDS = ("text", "target_text", "segments", "language", "speaker", "seed")


def row_item(
    row_index: int, clip_id: str, audio_uri: str, edits: tuple[EditSpec, ...], **fields: Any
) -> WorkItem:
    """A `WorkItem` of a row (`SPEC_FIELDS` go to its spec, the rest onto the item)."""
    row = {k: fields.pop(k) for k in SPEC_FIELDS if k in fields}
    return WorkItem(ClipSpec(row_index, clip_id, audio_uri, tuple(edits), **row), **fields)


@dataclass
class Finished:
    """An item back from the stages, with the records its rounds handed to the round channel
    (the item itself keeps only what it sealed); reads through to the item otherwise."""

    item: WorkItem
    records: list[RoundRecord]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.item, name)


def round_channel(stages: list[Stage]) -> RoundRecordStore:
    """The channel the stages' round ends hand their records to."""
    (channel,) = {id(s.records): s.records for s in stages if isinstance(s, RoundEnd)}.values()
    return channel


def records_of(stage_or_stages: RoundEnd | list[Stage], item: WorkItem) -> list[RoundRecord]:
    """Take (and check) the records an item's rounds handed to the channel."""
    stages = stage_or_stages if isinstance(stage_or_stages, list) else [stage_or_stages]
    return take_records(round_channel(stages), item)


def run_stages(stages: list[Stage], items: list[WorkItem]) -> list[Finished]:
    """Run items through the stages in this process; each comes back with its records."""
    done = list(LocalExecutor().run(stages, items))
    return [Finished(item, records_of(stages, item)) for item in done]


def round_channels_gone(timeout_s: float = 30.0) -> bool:
    """Whether no Ray round channel actor is left (waiting up to `timeout_s` for the cluster to
    release the name of one just killed)."""
    import time

    import ray

    from stepedit_core.executors.ray_round_records import NAME_PREFIX

    deadline = time.monotonic() + timeout_s
    while True:
        named = ray.util.list_named_actors(all_namespaces=True)
        if not any(a["name"].startswith(NAME_PREFIX) for a in named):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
