"""A verdict: one judge's word on one round of one clip, as a sealed record of the run.

A verdict is hash-chained to what it judged: `prev_record_sha256` is the judged round's
`record_sha256` (iteration 0, the source audio: the source file's sha256), and
`record_sha256` hashes every field with the same sealing the round records use, so
`stepedit verify` checks verdicts exactly as it checks rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

import pyarrow as pa

from stepedit_core.audit.records import seal as audit_seal
from stepedit_core.foundation.failures import check_code

RAW_ANSWER_CHARS = 2000  # enough to read why an answer did not parse; answers are short


@dataclass
class Verdict:
    clip_id: str
    row_index: int
    round: int  # 0: the source audio (or the clone round of a clone run)
    task: str  # emotion, style, paralinguistic; objective: the edit type judged
    label: str  # what the round should sound like
    language: str | None
    judge: str  # gemini, openai, objective
    model: str
    prompt_sha256: str | None
    audio_sha256: str
    status: str = "ok"  # ok / failed
    answer: str | None = None  # the label or score the judge gave
    score: int | None = None  # paralinguistic: 1..3
    correct: bool | None = None
    out_of_label: bool | None = None
    raw_answer: str | None = None
    error_code: str | None = None
    error: str | None = None
    cached: bool = False  # answered from the verdict cache (no request sent)
    stop_reason: str | None = None  # set when the clip stopped after this round
    prev_record_sha256: str | None = None
    record_sha256: str | None = None

    SCHEMA: ClassVar[pa.Schema] = pa.schema(
        [
            ("clip_id", pa.string()),
            ("row_index", pa.int64()),
            ("iteration", pa.int32()),
            ("task", pa.string()),
            ("label", pa.string()),
            ("language", pa.string()),
            ("judge", pa.string()),
            ("model", pa.string()),
            ("prompt_sha256", pa.string()),
            ("audio_sha256", pa.string()),
            ("status", pa.string()),
            ("answer", pa.string()),
            ("score", pa.int32()),
            ("correct", pa.bool_()),
            ("out_of_label", pa.bool_()),
            ("raw_answer", pa.string()),
            ("error_code", pa.string()),
            ("error", pa.string()),
            ("cached", pa.bool_()),
            ("stop_reason", pa.string()),
            ("prev_record_sha256", pa.string()),
            ("record_sha256", pa.string()),
        ]
    )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def landed(self) -> bool:
        """The judge says the round is what the clip asked for."""
        return self.ok and bool(self.correct)

    def fail(self, code: str, message: str) -> Verdict:
        self.status, self.error_code, self.error = "failed", check_code(code), message
        return self

    def to_row(self) -> dict[str, Any]:
        row = {f.name: getattr(self, f.name) for f in fields(self)}
        row["iteration"] = row.pop("round")
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Verdict:
        values = {f.name: row.get(f.name) for f in fields(cls) if f.name != "round"}
        return cls(round=row["iteration"], **values)

    def seal(self, judged_record_sha256: str) -> Verdict:
        """Chain to the judged record and hash; the last thing done to a verdict."""
        sealed = audit_seal(self.to_row(), judged_record_sha256)
        self.prev_record_sha256 = sealed["prev_record_sha256"]
        self.record_sha256 = sealed["record_sha256"]
        return self


def verdict_table(verdicts: list[Verdict]) -> pa.Table:
    return pa.Table.from_pylist([v.to_row() for v in verdicts], Verdict.SCHEMA)
