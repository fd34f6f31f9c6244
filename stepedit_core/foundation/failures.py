"""Every failure code the product can give a row, in one registry.

A row that can not be edited is never dropped: it gets a failure record with one of these codes
and a message naming the row, the field and what was expected. Codes arise in three places:

- `plan`: the row is refused while planning, before any work runs (a bad cell, an edit the
  engine can not run, a missing transcript);
- `stage`: a stage fails the item while it runs (unreadable audio, a model that produced no
  audio...);
- `run`: the run's own bookkeeping noticed the item went missing or produced nothing;
- `judge`: a judge gave no usable verdict on a round (the verdict records it; the row and its
  audio are untouched).

`ItemFailure` is the one exception type for a per-item failure: a stage raises it (or any
exception, which becomes `stage_error`) and the stage contract turns it into a failure on that
item alone. The README's table of codes is checked against this registry by a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Where = Literal["plan", "stage", "run", "judge"]

from stepedit_core.foundation.edits import SIGNAL, STEPAUDIO  # noqa: E402 - engine names live with the table

ANY_ENGINE = (SIGNAL, STEPAUDIO)


@dataclass(frozen=True)
class FailureCode:
    code: str
    meaning: str
    where: Where
    engines: tuple[str, ...] = ANY_ENGINE


_CODES = (
    # refused at plan time ---------------------------------------------------------------------
    FailureCode("missing_clip_id", "the row's `clip_id` is empty", "plan"),
    FailureCode("missing_audio_uri", "the row's `audio_uri` is empty", "plan"),
    FailureCode(
        "uri_not_allowed",
        "the `audio_uri` resolves (after `..` and symbolic links) outside the allowed roots "
        "(`--allow-root`, default: the manifest's folder); the file is never opened",
        "plan",
    ),
    FailureCode(
        "not_regular_file",
        "the `audio_uri` is a FIFO, a device or a socket, not a regular file (seen from its "
        "stat; it is never opened)",
        "plan",
    ),
    FailureCode(
        "file_too_large",
        "the audio file is over `--max-input-mb` (checked before reading: at plan time for "
        "local files, before the first byte for objects), or its header claims more samples "
        "than 4x that decoded",
        "plan",
    ),
    FailureCode(
        "duplicate_clip_id",
        "the clip id appeared earlier in the manifest (the later rows fail)",
        "plan",
    ),
    FailureCode("invalid_edit", "the row's `edit` cell is not in the edit vocabulary", "plan"),
    FailureCode(
        "missing_edit", "no edit for the row: no `--edit` and an empty `edit` cell", "plan"
    ),
    FailureCode(
        "unsupported_edit",
        "the engine can not run that edit (the message names the engine that can)",
        "plan",
    ),
    FailureCode("missing_text", "the edit needs the transcript in `text`", "plan", (STEPAUDIO,)),
    FailureCode("missing_target_text", "the edit needs `target_text`", "plan", (STEPAUDIO,)),
    FailureCode(
        "invalid_segments",
        "the `segments` cell is not a JSON list of {start, end, text} in order (checked while "
        "planning), or its times do not fit the clip or the model's 30 s window (checked on "
        "the audio)",
        "plan",
    ),
    # reading the clip (any engine) ------------------------------------------------------------
    FailureCode("missing_file", "the audio file does not exist", "stage"),
    FailureCode("unreadable_file", "the audio file can not be read (a folder, no access)", "stage"),
    FailureCode("empty_file", "the audio file has 0 bytes", "stage"),
    FailureCode(
        "read_timeout", "reading the audio file took longer than `--read-timeout`", "stage"
    ),
    FailureCode("not_audio", "the file is not audio that libsndfile can decode", "stage"),
    FailureCode("empty_audio", "the audio file decodes to no samples", "stage"),
    FailureCode("non_finite_samples", "the audio holds NaN or infinite samples", "stage"),
    # engine stages --------------------------------------------------------------------------
    FailureCode("no_audio", "a stage found no input audio for the round", "stage"),
    FailureCode(
        "too_short",
        "too short: under 0.4 s for BS.1770 loudness (signal), or no complete token group "
        "after trimming (step-audio-editx)",
        "stage",
    ),
    FailureCode("too_quiet", "silent or nearly so: no level to normalise", "stage", (SIGNAL,)),
    FailureCode(
        "loudness_unreachable",
        "no level in the target's window (acx: -23..-18 dB RMS; LUFS: target ±0.5) is "
        "reachable with 10 dB of limiting",
        "stage",
        (SIGNAL,),
    ),
    FailureCode(
        "unsupported_channels",
        "more than 5 channels, which BS.1770 loudness does not measure",
        "stage",
        (SIGNAL,),
    ),
    FailureCode("no_speech", "vad found no speech in the clip", "stage", (SIGNAL,)),
    FailureCode(
        "non_finite_output", "the edit produced NaN or infinite samples", "stage", (SIGNAL,)
    ),
    FailureCode(
        "no_word_timings",
        "the edit needs word timings: English `text` (aligned with pocketsphinx) or an ASR "
        "model (`--asr-models`)",
        "stage",
        (SIGNAL,),
    ),
    FailureCode(
        "alignment_failed", "the audio could not be aligned with its `text`", "stage", (SIGNAL,)
    ),
    FailureCode("asr_failed", "the ASR model could not transcribe the audio", "stage"),
    FailureCode(
        "too_long",
        "prompt plus expected output over the model's 8192-token cap (checked before "
        "generating; the message gives the limit in seconds)",
        "stage",
        (STEPAUDIO,),
    ),
    FailureCode(
        "missing_segment_text",
        "the clip is longer than one segment (`--segment-seconds`) and no segment has a "
        "transcript: give a `segments` column or `--asr-models`",
        "stage",
        (STEPAUDIO,),
    ),
    FailureCode(
        "no_pause",
        "the clip is longer than one segment and speech runs on past the segment length with "
        "no pause to cut in",
        "stage",
        (STEPAUDIO,),
    ),
    FailureCode(
        "bad_edit", "the edit's instruction could not be built for this row", "stage", (STEPAUDIO,)
    ),
    FailureCode("no_tokens", "an earlier stage left no audio tokens", "stage", (STEPAUDIO,)),
    FailureCode(
        "bad_generation",
        "the model's output is not well-formed audio tokens, or has no end within the cap",
        "stage",
        (STEPAUDIO,),
    ),
    FailureCode("generation_error", "the generation call failed", "stage", (STEPAUDIO,)),
    FailureCode(
        "bad_decode", "the decoder could not turn the tokens into audio", "stage", (STEPAUDIO,)
    ),
    FailureCode(
        "stage_error", "a stage raised an unexpected error (the message names it)", "stage"
    ),
    FailureCode(
        "worker_died",
        "the worker process running the clip died, again when its batch was retried",
        "stage",
    ),
    # the run's bookkeeping --------------------------------------------------------------------
    FailureCode(
        "over_max_wer",
        "`--select best`: every round's word error rate against its text is over `--qc-max-wer` "
        "(the rounds stay in `iterations/`; none is delivered)",
        "run",
    ),
    FailureCode("no_output", "the engine stages finished without producing audio", "run"),
    FailureCode("lost_item", "the item did not come back from the executor", "run"),
    # judging a round (the verdict fails, never the row) ---------------------------------------
    FailureCode(
        "judge_failed",
        "the judge API gave no answer after retries (timeouts, 429/5xx, refused request, "
        "key not set), or no objective judge exists for the edit",
        "judge",
    ),
    FailureCode(
        "judge_unparsable",
        "the judge answered, but with no label or score of the task (kept in `raw_answer`)",
        "judge",
    ),
)

CODES: dict[str, FailureCode] = {c.code: c for c in _CODES}


class RunRefused(Exception):
    """The whole run can not start (bad manifest, engine not ready, bad job): nothing ran."""


class UnknownFailureCode(ValueError):
    pass


def check_code(code: str) -> str:
    """The code itself, if it is registered; an unregistered code is a programming error."""
    if code not in CODES:
        raise UnknownFailureCode(
            f"failure code {code!r} is not in stepedit_core.foundation.failures.CODES"
        )
    return code


class ItemFailure(Exception):
    """One item can not be processed; the stage contract turns it into that item's failure."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = check_code(code)

    @property
    def message(self) -> str:
        return str(self)


def markdown_table() -> str:
    """The README's table of failure codes, made from this registry."""
    arising = {
        "plan": "refused at plan time",
        "stage": "failed in a stage",
        "run": "run bookkeeping",
        "judge": "verdict of a judge",
    }
    lines = ["| code | where | engines | meaning |", "|---|---|---|---|"]
    for c in _CODES:
        engines = "any" if c.engines == ANY_ENGINE else ", ".join(c.engines)
        lines.append(f"| `{c.code}` | {arising[c.where]} | {engines} | {c.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m stepedit_core.foundation.failures > table, for the README
    print(markdown_table(), end="")
