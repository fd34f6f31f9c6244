"""The rounds of a finished run as training data sees them: iteration 0 and every round.

Iteration 0 is what a clip started from: the run's round-0 record where the engine made one
(a clone), otherwise the source file (its URI from the output manifest, its sha256 the one the
first round recorded as its input). Rounds are read without their audio.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from stepedit_core.foundation.store import RunStore

COLUMNS = ["clip_id", "row_index", "iteration", "edit", "status", "input_sha256",
           "output_sha256", "record_sha256", "instruction"]  # fmt: skip
TOKEN_COLUMNS = ["input_tokens", "output_tokens"]


@dataclass
class RoundRef:
    clip_id: str
    row_index: int
    iteration: int
    audio_sha256: str
    record_sha256: str  # what a rating or a pair chains to (the source: its file's sha256)
    part: str | None  # the iterations part holding it (None: the source file)
    source_uri: str | None = None  # iteration 0 without a record: the source file
    edit: str | None = None
    instruction: str | None = None
    input_tokens: list[int] | None = None
    output_tokens: list[int] | None = None

    @property
    def is_source(self) -> bool:
        return self.part is None


def read_rounds(store: RunStore, tokens: bool = False) -> dict[int, dict[int, RoundRef]]:
    """row_index -> iteration -> the ok rounds of the run (and iteration 0)."""
    columns = COLUMNS + (TOKEN_COLUMNS if tokens else [])
    sources = store.read_table(store.manifest, ["audio_uri"]).column(0).to_pylist()
    by_row: dict[int, dict[int, RoundRef]] = defaultdict(dict)
    first_input: dict[int, tuple[int, str]] = {}
    for part in store.list(store.iterations_dir):
        for rec in store.read_table(part, columns).to_pylist():
            row, iteration = rec["row_index"], rec["iteration"]
            if row not in first_input or iteration < first_input[row][0]:
                first_input[row] = (iteration, rec["input_sha256"])
            if rec["status"] != "ok" or not rec["output_sha256"]:
                continue
            by_row[row][iteration] = RoundRef(
                clip_id=rec["clip_id"],
                row_index=row,
                iteration=iteration,
                audio_sha256=rec["output_sha256"],
                record_sha256=rec["record_sha256"],
                part=part,
                edit=rec["edit"],
                instruction=rec["instruction"],
                input_tokens=rec.get("input_tokens"),
                output_tokens=rec.get("output_tokens"),
            )
    for row, (iteration, input_sha) in first_input.items():
        rounds = by_row[row]
        if iteration == 0 or 0 in rounds or not rounds:
            continue
        clip_id = next(iter(rounds.values())).clip_id
        source = sources[row] if row < len(sources) else None
        rounds[0] = RoundRef(clip_id, row, 0, input_sha, input_sha, None, source_uri=source)
    return dict(by_row)
