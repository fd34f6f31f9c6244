"""A round record's `qc_json`, written and read in one place: `{"metrics": {...}, "notes":
{...}}` when QC measured the round, or `{"error": "..."}` when it could not.

QC (round_qc.py, through qc.py's `QcReport`) writes it with `to_json`; readers (delivery,
best-round selection, the review page, `stepedit audit`) ask `QcResult.parse` for what they need
instead of parsing the text themselves, so the format has one writer and one reader."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class QcResult:
    metrics: dict[str, Any] = field(default_factory=dict)  # None where not measured
    notes: dict[str, str] = field(default_factory=dict)  # why a metric is None
    error: str | None = None  # QC could not measure the round at all

    @classmethod
    def failed(cls, exc: BaseException) -> QcResult:
        """QC could not measure the round: why, for the record."""
        return cls(error=f"{type(exc).__name__}: {exc}")

    def to_json(self) -> str:
        """The record's `qc_json`."""
        if self.error is not None:
            return json.dumps({"error": self.error})
        return json.dumps({"metrics": self.metrics, "notes": self.notes}, sort_keys=True)

    @classmethod
    def parse(cls, blob: str | None) -> QcResult:
        """The record's `qc_json`; no QC (None or empty) is an empty result. Text that is not
        a QC object is an error result, never an exception: QC describes a round, and a
        reader must not fail because the description is damaged (`verify` reports that)."""
        if not blob:
            return cls()
        try:
            data = json.loads(blob)
        except ValueError as exc:
            return cls(error=f"qc_json is not JSON: {exc}")
        if not isinstance(data, dict):
            return cls(error=f"qc_json is a {type(data).__name__}, expected an object")
        metrics, notes = data.get("metrics") or {}, data.get("notes") or {}
        if not isinstance(metrics, dict) or not isinstance(notes, dict):
            return cls(error="qc_json's metrics and notes must be objects")
        return cls(metrics=metrics, notes=notes, error=data.get("error"))

    def measured(self) -> dict[str, Any]:
        """The metrics that were measured (not None), by name."""
        return {k: v for k, v in sorted(self.metrics.items()) if v is not None}

    def numeric(self) -> dict[str, float]:
        """The finite numeric metrics (what can be charted or compared)."""
        return {
            k: float(v)
            for k, v in self.metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
