"""ASR from a local faster-whisper model folder (CTranslate2): transcripts and word timings.

Offline only: the folder is opened with `local_files_only`, and `check_asr_folder` refuses a run
whose folder is missing or lacks a file the model needs, before anything starts. The model
runs int8 on one CPU thread per actor (the executor scales out by actors, not threads).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from stepedit_core.foundation.failures import ItemFailure, RunRefused
from stepedit_core.words.language import base_language
from stepedit_core.words.timing import Word

ASR_RATE = 16000
# what a CTranslate2 Whisper folder must hold (the vocabulary as .txt or .json)
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARY_FILES = ("vocabulary.txt", "vocabulary.json")
MADE_UP_BELOW = 0.5  # probability under which a zero-length word is left out (`_made_up`)


def check_asr_folder(path: str | None) -> None:
    """RunRefused unless `path` is a complete faster-whisper (CTranslate2) model folder."""
    if path is None:
        return
    folder = Path(path)
    if not folder.is_dir():
        raise RunRefused(f"--asr-models {path}: no such folder (a faster-whisper model folder)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in VOCABULARY_FILES):
        missing.append(" or ".join(VOCABULARY_FILES))
    if missing:
        raise RunRefused(
            f"--asr-models {path}: not a complete faster-whisper (CTranslate2) folder, missing "
            f"{', '.join(missing)}"
        )
    if importlib.util.find_spec("faster_whisper") is None:
        raise RunRefused(
            "--asr-models needs the faster-whisper package: pip install 'stepedit[asr]'"
        )


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None
    words: list[Word]


class WhisperAsr:
    """A faster-whisper model loaded from a local folder."""

    name = "faster-whisper"

    def __init__(self, folder: str, threads: int = 1) -> None:
        from faster_whisper import WhisperModel

        self.folder = folder
        self._model: Any = WhisperModel(
            folder, device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True
        )

    def transcribe(
        self, samples: np.ndarray, sample_rate: int, language: str | None = None
    ) -> Transcript:
        """Greedy decoding with word timestamps; `language` None lets the model detect it."""
        mono = samples.mean(axis=1) if samples.ndim > 1 else samples
        if sample_rate != ASR_RATE:
            mono = soxr.resample(mono, sample_rate, ASR_RATE, quality="HQ")
        if self._model.model.is_multilingual is False:
            language = "en"  # an English-only model (*.en) takes no other language
        try:
            segments, info = self._model.transcribe(
                np.ascontiguousarray(mono, dtype=np.float32),
                language=whisper_language(language),
                beam_size=1,
                word_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
            )
            segments = list(segments)
        except Exception as exc:  # noqa: BLE001 - the item's failure names what went wrong
            raise ItemFailure("asr_failed", f"{type(exc).__name__}: {exc}") from None
        words = [
            Word(
                w.word.strip(),
                round(float(w.start), 3),
                round(float(w.end), 3),
                round(float(w.probability), 3),
            )  # fmt: skip
            for segment in segments
            for w in segment.words or []
            if w.word.strip() and not _made_up(w)
        ]
        text = " ".join(w.word for w in words)
        return Transcript(text, info.language, words)


def _made_up(word: Any) -> bool:
    """A word Whisper gives no time at all and little belief: on filler sounds it writes a
    word of its own ("back", "done"), which aligned as text would keep the filler."""
    return float(word.end) <= float(word.start) and float(word.probability) < MADE_UP_BELOW


@lru_cache(maxsize=2)
def shared_asr(folder: str) -> WhisperAsr:
    """The process's model for `folder`: the fillers edit, transcripts and QC share it."""
    return WhisperAsr(folder)


def whisper_language(language: str | None) -> str | None:
    """The manifest's `language` (`en`, `en-US`, `zh_CN`) as Whisper's code (`en`, `zh`)."""
    return base_language(language) or None
