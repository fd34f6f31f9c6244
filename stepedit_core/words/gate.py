"""The word-error gate: each round's WER against what it should say, and the limit on it.

A round should say its row's `text`, or after an edit that changes the text (clone,
paralinguistic) the `target_text` without its tags. The round's audio is transcribed with the
run's ASR model (`--asr-models`) and compared; `wer` joins the round's QC metrics (a character
error rate for Chinese and Japanese) and `--qc-max-wer` fails a round
over the limit, which `--select best` then never delivers.
"""

from __future__ import annotations

import re
from typing import Any

from stepedit_core.words.wer import error_rate

TAG = re.compile(r"\[[^\]]*\]")


def expected_text(item: Any) -> str | None:
    """What the round's audio should say (tags such as `[Laughter]` are sounds, not words)."""
    if any(spec.kind.changes_text for spec in item.round_edits) and item.target_text:
        return TAG.sub(" ", item.target_text)
    return item.text


def measure_wer(item: Any, asr: Any) -> tuple[float | None, str | None]:
    """(the round output's `wer`, or None and why not)."""
    text = expected_text(item)
    if not (text or "").strip():
        return None, "no text to compare with (column 'text' is empty)"
    # the word-timing stage's ASR pass, if any
    heard = item.words.transcript if item.words is not None else None
    if heard is None:
        output = item.samples("output")  # read here when the output is a reference
        assert output is not None
        heard = asr.transcribe(output.samples, output.sample_rate, item.language).text
    rate = error_rate(text, heard, item.language)
    if rate is None:
        return None, "the text has no words after normalising"
    return round(rate, 4), None
