"""The round channel: each sealed round record leaves its clip as the round ends, and the shard
writer takes a clip's records when the clip finishes.

`RoundEnd` (rounds.py) puts a batch's records into a `RoundRecordSink`, keyed by (row, attempt,
round); the item keeps only `WorkItem.sealed` (how many rounds, the last two's hashes). When
the item comes back from the executor, `take_records` removes every record of its row from the
channel and returns those of the item's attempt, checked against what the item sealed: the
same number, linked one to the next, ending at the item's last record. The writer commits them
with the row result in one part, as before, so a crash never leaves some rounds of a clip
committed without the rest.

Exactly once, under retries: a batch that runs again (its worker died) puts the same keys and
replaces its records; a clip run again from the start after its worker kept dying
(shard.run_isolating) runs under a new attempt, and the failed attempt's records are dropped
when the clip is taken, never added. A taken row leaves nothing behind, so the channel holds
only the rounds of clips still in flight, however long the shard.

`RoundRecordStore` is the channel of an executor that runs stages in this process. An executor
whose stages run in other processes opens its own (`round_channel()`: the Ray executor's is a
named actor, executors/ray_round_records.py); its `sink` is what travels to the workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

# nothing of stepedit is imported when this module loads: the Ray channel's actor is a
# `RoundRecordStore` too, and its process should start as fast as a bare Ray worker
if TYPE_CHECKING:
    from stepedit_core.catalog.records import RoundRecord
    from stepedit_core.foundation.stages import WorkItem

# (the item's attempt, its sealed record); the record names its row and round
Handed = tuple[int, "RoundRecord"]
# (row, attempt, round, what is held: a record, or its pickled bytes in the Ray channel's actor)
Keyed = tuple[int, int, int, Any]


class RoundRecordSink(Protocol):
    """Where `RoundEnd` hands the records it sealed; returns once they are held."""

    def put(self, records: list[Handed]) -> None: ...


class RoundRecordChannel(RoundRecordSink, Protocol):
    """A run's round channel, as the shard writer's process sees it."""

    @property
    def sink(self) -> RoundRecordSink:
        """What `RoundEnd` puts into: the channel itself, or a handle that can travel."""
        ...

    def take_row(self, row_index: int, attempt: int) -> list[RoundRecord]:
        """Remove every record of the row; return the attempt's, by round."""
        ...

    def held(self) -> int:
        """How many records the channel holds now."""
        ...


class MissingRoundRecords(RuntimeError):
    """The channel does not hold the rounds a finished clip sealed (a channel that lost them)."""


class RoundRecordStore:
    """An in-process round channel: row -> attempt -> round -> record. (The Ray channel's
    actor is one as well, holding each record's pickled bytes: `put_keyed`.)"""

    def __init__(self) -> None:
        self._rows: dict[int, dict[int, dict[int, Any]]] = {}

    @property
    def sink(self) -> RoundRecordStore:
        return self

    def put(self, records: list[Handed]) -> None:
        self.put_keyed([(r.row_index, attempt, r.round, r) for attempt, r in records])

    def put_keyed(self, entries: list[Keyed]) -> None:
        for row_index, attempt, round_number, held in entries:
            # a round put again (its batch was retried) replaces the earlier record
            self._rows.setdefault(row_index, {}).setdefault(attempt, {})[round_number] = held

    def take_row(self, row_index: int, attempt: int) -> list[Any]:
        by_round = self._rows.pop(row_index, {}).get(attempt, {})
        return [by_round[k] for k in sorted(by_round)]

    def held(self) -> int:
        return sum(len(r) for attempts in self._rows.values() for r in attempts.values())

    def __reduce__(self) -> Any:
        # a copy in a worker process would collect records the writer never sees
        raise TypeError(
            "an in-process round channel cannot travel to another process: an executor that "
            "runs stages elsewhere must open its own (round_channel())"
        )


def take_records(channel: RoundRecordChannel, item: WorkItem) -> list[RoundRecord]:
    """The records `item` sealed in its attempt, removed from the channel with any earlier
    attempt's. Raises `MissingRoundRecords` when they are not exactly what the item sealed."""
    records = channel.take_row(item.row_index, item.attempt)
    sealed = item.sealed
    link = item.source_sha256 or ""
    problem = None
    if len(records) != sealed.count:
        problem = f"it sealed {sealed.count} round(s), the channel holds {len(records)}"
    for record in records if problem is None else ():
        if record.prev_record_sha256 != link:
            problem = f"round {record.round}'s record does not link to the one before it"
            break
        link = record.record_sha256 or ""
    last = sealed.last
    if problem is None and last is not None and link != last.record_sha256:
        problem = f"the channel's last record is not round {last.round}'s that the clip sealed"
    if problem is not None:
        held = [r.round for r in records]
        raise MissingRoundRecords(
            f"row {item.row_index} (clip {item.clip_id!r}), attempt {item.attempt}: {problem} "
            f"(rounds held: {held}); its rounds are not committed and a resume runs it again"
        )
    return records


def drop_rounds(item: WorkItem) -> None:
    """Forget the rounds of an item whose run did not come back (its worker died, the executor
    lost it): it is recorded as failed with no rounds, and taking it drops whatever its lost
    run put into the channel."""
    from stepedit_core.foundation.stages import SealedRounds

    item.attempt += 1
    item.sealed = SealedRounds()


def open_round_channel(executor: object) -> Any:
    """The executor's round channel (`round_channel()`), or an in-process one for an executor
    that runs every stage in this process. A context manager: the channel ends with it."""
    opener = getattr(executor, "round_channel", None)
    return opener() if opener is not None else _in_process()


@contextmanager
def _in_process() -> Iterator[RoundRecordStore]:
    yield RoundRecordStore()
