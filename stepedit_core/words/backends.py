"""Word-timing backends: each says which rows it can time, and the first that can is used.

In order of preference:
- `ScriptAlignment` (pocketsphinx): English with a text, forced alignment of the text;
- `TranscriptAlignment` (faster-whisper, then pocketsphinx): English without a text, the ASR's
  transcript aligned the same way (Whisper's own word times are coarse, and it leaves most
  fillers out of its transcript, which the aligner then finds between its words);
- `AsrWords` (faster-whisper): any language, the ASR's word times, with voiced stretches that no
  word explains marked as fillers.

A backend is any object with `name`, `can_time(text, language)` and `times(samples, rate,
text, language)`; `word_timings` tries them in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.words.fillers import unexplained_voice
from stepedit_core.words.language import is_english
from stepedit_core.words.timing import Word

VOICED_MIN_SILENCE_S = 0.1  # pauses this long split voiced stretches (unexplained voice)


@dataclass
class WordTimings:
    words: list[Word]
    backend: str  # the backend's name
    text: str | None = None  # the text the timings are of (the ASR's when it made one)
    text_source: str | None = None  # "manifest" or "asr"
    transcript: str | None = None  # what the ASR heard, when a backend ran it


class WordTimer(Protocol):
    name: str

    def can_time(self, text: str | None, language: str | None) -> bool: ...

    def times(
        self, samples: np.ndarray, sample_rate: int, text: str | None, language: str | None
    ) -> WordTimings: ...


def _has_text(text: str | None) -> bool:
    return bool((text or "").strip())


class ScriptAlignment:
    name = "pocketsphinx"

    def can_time(self, text: str | None, language: str | None) -> bool:
        return is_english(language) and _has_text(text)

    def times(
        self, samples: np.ndarray, sample_rate: int, text: str | None, language: str | None
    ) -> WordTimings:
        from stepedit_core.words.align import shared_aligner

        words = shared_aligner().align(samples, sample_rate, text or "")
        return WordTimings(words, self.name, text, "manifest")


class TranscriptAlignment:
    def __init__(self, asr: Any) -> None:
        self.asr = asr
        self.name = f"{asr.name}+pocketsphinx"

    def can_time(self, text: str | None, language: str | None) -> bool:
        return is_english(language)

    def times(
        self, samples: np.ndarray, sample_rate: int, text: str | None, language: str | None
    ) -> WordTimings:
        from stepedit_core.words.align import shared_aligner

        transcript = self.asr.transcribe(samples, sample_rate, language)
        if not transcript.text:
            raise ItemFailure("asr_failed", "the ASR model heard no words in the clip")
        words = shared_aligner().align(samples, sample_rate, transcript.text)
        return WordTimings(words, self.name, transcript.text, "asr", transcript.text)


class AsrWords:
    def __init__(self, asr: Any, vad: Any = None) -> None:
        self.asr, self.vad = asr, vad
        self.name = asr.name

    def can_time(self, text: str | None, language: str | None) -> bool:
        return True

    def times(
        self, samples: np.ndarray, sample_rate: int, text: str | None, language: str | None
    ) -> WordTimings:
        transcript = self.asr.transcribe(samples, sample_rate, language)
        words = transcript.words
        if self.vad is not None:
            voiced = self.vad.speech(samples, sample_rate, VOICED_MIN_SILENCE_S)
            spans = [(start / sample_rate, end / sample_rate) for start, end in voiced]
            words = unexplained_voice(words, spans)
        if _has_text(text):
            return WordTimings(words, self.name, text, "manifest", transcript.text)
        return WordTimings(words, self.name, transcript.text, "asr", transcript.text)


def timers(asr: Any = None, vad: Any = None) -> list[WordTimer]:
    """The backends this run has, best first (the ASR ones only with an ASR model)."""
    found: list[WordTimer] = [ScriptAlignment()]
    if asr is not None:
        found += [TranscriptAlignment(asr), AsrWords(asr, vad)]
    return found


def word_timings(
    samples: np.ndarray,
    sample_rate: int,
    text: str | None,
    language: str | None,
    asr: Any = None,
    vad: Any = None,
) -> WordTimings:
    """(frames, channels) samples timed by the first backend that can time this row."""
    for timer in timers(asr, vad):
        if timer.can_time(text, language):
            return timer.times(samples, sample_rate, text, language)
    why = "no text" if is_english(language) else "a language pocketsphinx has no model for"
    raise ItemFailure(
        "no_word_timings",
        f"the row has {why} (column 'text' {'set' if _has_text(text) else 'empty'}, language "
        f"{language or 'not set'}); pass --asr-models DIR for word timings",
    )
