"""The `fillers` edit: word timings from the best backend the row has (`backends`), the cuts
planned from them (`fillers`), and made unless the edit only lists them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepedit_core.foundation.edits import EditSpec, fillers_of
from stepedit_core.words.backends import WordTimings, word_timings
from stepedit_core.words.fillers import Cut, apply_cuts, pauses, plan_cuts


@dataclass
class FillerResult:
    samples: np.ndarray
    timings: WordTimings
    cuts: list[Cut] = field(default_factory=list)


def remove_fillers(
    spec: EditSpec,
    samples: np.ndarray,
    sample_rate: int,
    text: str | None,
    language: str | None,
    asr: Any = None,
    vad: Any = None,
) -> FillerResult:
    """The fillers edit on (frames, channels) samples: cuts planned, and made unless the edit
    only lists them (`fillers=list`)."""
    chosen, list_only = fillers_of(spec)
    timings = word_timings(samples, sample_rate, text, language, asr, vad)
    duration = samples.shape[0] / sample_rate
    cuts = plan_cuts(timings.words, chosen, duration)
    if list_only or not cuts:
        return FillerResult(samples, timings, cuts)
    quiet = pauses(timings.words, duration)
    return FillerResult(apply_cuts(samples, sample_rate, cuts, quiet), timings, cuts)
