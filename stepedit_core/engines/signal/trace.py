"""What the signal engine records of a round beyond its audio: the fillers edit's cuts."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from stepedit_core.foundation.traces import EngineTrace, RecordColumn
from stepedit_core.words.fillers import Cut, cuts_json


def _cuts_json(trace: SignalTrace) -> str | None:
    return None if trace.cuts is None else cuts_json(trace.cuts)


@dataclass
class SignalTrace(EngineTrace):
    # the fillers edit's cuts, in the round's input timeline
    cuts: list[Cut] | None = None

    COLUMNS = (
        # [{"start_s", "end_s", "word", "room_tone_s"}]
        RecordColumn("cuts_json", pa.string(), _cuts_json, after="words_json"),
    )
