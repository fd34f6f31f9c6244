"""Engine traces: what an engine's stages hand each other within a round, and the record
columns the engine adds to the round record.

Each engine declares one `EngineTrace` subclass (a dataclass of its own: the model engine's
tokens, passes, instruction and model fingerprint; the signal engine's cuts) and lists in
`COLUMNS` the columns its round records carry, each with its Arrow type and how it is filled
from the trace. The shared round record (records.py) knows none of these names: the iterations
schema is the shared columns plus the union of every registered engine's columns
(`stepedit_core.engines.round_record_schema`), so a run's Parquet files have the same schema
whichever engine ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pyarrow as pa

if TYPE_CHECKING:
    from stepedit_core.foundation.stages import WorkItem

T = TypeVar("T", bound="EngineTrace")


@dataclass(frozen=True)
class RecordColumn:
    """One column an engine adds to the round record."""

    name: str
    type: pa.DataType
    fill: Callable[[Any], Any]  # the engine's trace -> the column's value (None: null)
    after: str  # the column it follows in the schema (files keep one column order)


class EngineTrace:
    """Base of the engines' traces. A new trace is made on an item by the first stage of a round
    that needs it (`of`); the round end records it and keeps only what `next_round` returns."""

    COLUMNS: ClassVar[tuple[RecordColumn, ...]] = ()

    @classmethod
    def of(cls: type[T], item: WorkItem) -> T:
        """The item's trace of this engine in this round, made on first use."""
        if not isinstance(item.trace, cls):
            item.trace = cls()
        return item.trace

    def record_values(self) -> dict[str, Any]:
        """The engine's columns of the round record, by name."""
        return {column.name: column.fill(self) for column in self.COLUMNS}

    def next_round(self) -> EngineTrace | None:
        """What the next round of the clip starts from (default: nothing)."""
        return None
