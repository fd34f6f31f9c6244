"""Word timings for a clip from the best backend it has, and the `fillers` edit on top of them.

Backends, best first:
- English with a text (the row's `text`): forced alignment with pocketsphinx (`align`);
- English without one, with an ASR folder: the ASR transcript, then aligned the same way
  (Whisper's own word times are coarse and it leaves most fillers out of its transcript);
- other languages, with an ASR folder: the ASR's word times, and voiced stretches no word
  explains count as fillers (`fillers.unexplained_voice`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stepedit_core.edits import EditSpec, fillers_of
from stepedit_core.failures import ItemFailure
from stepedit_core.words.fillers import Cut, apply_cuts, pauses, plan_cuts, unexplained_voice
from stepedit_core.words.timing import Word


@dataclass
class WordTimings:
    words: list[Word]
    backend: str  # "pocketsphinx", "faster-whisper+pocketsphinx" or "faster-whisper"
    text: str | None = None  # the text the timings are of (the ASR's when it made one)
    text_source: str | None = None  # "manifest" or "asr"


@dataclass
class FillerResult:
    samples: np.ndarray
    timings: WordTimings
    cuts: list[Cut] = field(default_factory=list)


def is_english(language: str | None) -> bool:
    """No language given counts as English (the aligner's only model)."""
    return not language or language.replace("_", "-").lower().split("-")[0] in ("en", "eng")


def word_timings(
    samples: np.ndarray,
    sample_rate: int,
    text: str | None,
    language: str | None,
    asr: Any = None,
    vad: Any = None,
) -> WordTimings:
    """Word timings by the best backend available (see the module's docstring)."""
    from stepedit_core.words.align import shared_aligner

    english = is_english(language)
    if english and (text or "").strip():
        return WordTimings(shared_aligner().align(samples, sample_rate, text), "pocketsphinx",
                           text, "manifest")  # fmt: skip
    if asr is None:
        why = "a language pocketsphinx has no model for" if not english else "no text"
        raise ItemFailure(
            "no_word_timings",
            f"the row has {why} (column 'text' {'set' if text else 'empty'}, language "
            f"{language or 'not set'}); pass --asr-models DIR for word timings",
        )
    transcript = asr.transcribe(samples, sample_rate, language)
    source = "manifest" if (text or "").strip() else "asr"
    if english and transcript.words:
        words = shared_aligner().align(samples, sample_rate, transcript.text)
        return WordTimings(words, f"{asr.name}+pocketsphinx", transcript.text, source)
    words = transcript.words
    if vad is not None:
        voiced = vad.speech(samples.reshape(samples.shape[0], -1), sample_rate, 0.1)
        spans = [(a / sample_rate, b / sample_rate) for a, b in voiced]
        words = unexplained_voice(words, spans)
    return WordTimings(words, asr.name, text if source == "manifest" else transcript.text, source)


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
