"""Forced alignment of a known English text with pocketsphinx (model and dictionary in the wheel).

The text becomes a grammar in which any number of fillers may sit before, between and after
its words, so the decoder has to account for the whole text, in order, and may explain extra
voiced sounds only as fillers. Its segmentation gives every word's start and end (10 ms frames)
and posterior. Words the dictionary does not know get a spelling-based pronunciation, which is
rough but keeps them in the text: a word of the text is never left to be taken for a filler.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import numpy as np
import soxr

from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.words.numbers import spell_numbers
from stepedit_core.words.timing import Word

ALIGN_RATE = 16000
FRAME_S = 0.01  # pocketsphinx's frame rate: 100 frames per second
# our own pronunciations of fillers (CMU phones), so the set does not depend on the dictionary
FILLER_PHONES = {
    "um": "AH M",
    "uhm": "AH M",
    "uh": "AH",
    "er": "ER",
    "erm": "ER M",
    "ah": "AA",
    "hmm": "HH M",
    "hm": "HH M",
    "mm": "M",
}
LETTER_PHONES = {
    "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH",
    "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R",
    "s": "S", "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z",
}  # fmt: skip
NON_WORDS = {"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]"}
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


def tokens(text: str) -> list[str]:
    """The text's words as the dictionary spells them: lower case, numbers in words."""
    return TOKEN.findall(spell_numbers(text.lower()))


# Search beams: the narrow set is ~5x faster than pocketsphinx's defaults and gave the same
# alignments on the test clips; when it finds no path through the text, the defaults retry.
NARROW_BEAMS = {"beam": 1e-20, "wbeam": 1e-15, "pbeam": 1e-20}
DEFAULT_BEAMS: dict[str, float] = {}


class PocketsphinxAligner:
    """Decoders loaded once per process (~0.2 s each); not thread-safe."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        self._decoders: dict[str, Any] = {}
        self._grammars = 0

    def _decoder(self, beams: dict[str, float]) -> Any:
        key = repr(sorted(beams.items()))
        if key not in self._decoders:
            from pocketsphinx import Config, Decoder

            decoder = Decoder(Config(lm=None, loglevel="FATAL", **beams))
            for word, phones in FILLER_PHONES.items():
                if decoder.lookup_word(word) is None:
                    decoder.add_word(word, phones, False)
            self._decoders[key] = decoder
        return self._decoders[key]

    def align(self, samples: np.ndarray, sample_rate: int, text: str) -> list[Word]:
        """Words of `text` and any fillers, in order, timed in seconds of `samples`."""
        words = tokens(text)
        if not words:
            raise ItemFailure("alignment_failed", "column 'text' has no words to align")
        pcm = pcm16(samples, sample_rate)
        segments = self._search(NARROW_BEAMS, words, pcm) or self._search(DEFAULT_BEAMS, words, pcm)
        found = [
            Word(
                word=re.sub(r"\(\d+\)$", "", seg.word),
                start=round(seg.start_frame * FRAME_S, 3),
                end=round((seg.end_frame + 1) * FRAME_S, 3),
                confidence=round(float(seg.prob), 3),
            )
            for seg in segments
            if seg.word not in NON_WORDS
        ]
        if not found:
            raise ItemFailure(
                "alignment_failed",
                f"pocketsphinx found no alignment of the {len(words)} words of the text with "
                "the audio (does column 'text' say what the clip says? very noisy audio: "
                "chain denoise before fillers)",
            )
        # the text's words come out in order; anything else came from a filler loop (a filler
        # spoken as a word of the text stays a word of the text)
        marked, next_word = [], 0
        for w in found:
            is_text = next_word < len(words) and w.word == words[next_word]
            next_word += is_text
            marked.append(Word(w.word, w.start, w.end, w.confidence, not is_text))
        return marked

    def _search(self, beams: dict[str, float], words: list[str], pcm: bytes) -> list[Any]:
        """The segmentation of the best path through the text's grammar ([] when none)."""
        decoder = self._decoder(beams)
        for word in words:  # a word the dictionary lacks gets a pronunciation from its letters
            if decoder.lookup_word(word) is None:
                letters = [LETTER_PHONES[c] for c in word if c in LETTER_PHONES]
                decoder.add_word(word, " ".join(letters) or "AH", False)
        filler = "( " + " | ".join(FILLER_PHONES) + " )*"
        body = " ".join(f"{w} {filler}" for w in words)
        grammar = f"#JSGF V1.0;\ngrammar text;\npublic <text> = {filler} {body} ;\n"
        self._grammars += 1
        name = f"text{self._grammars}"
        decoder.add_jsgf_string(name, grammar)
        decoder.activate_search(name)
        try:
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            return list(decoder.seg() or [])
        finally:
            decoder.remove_search(name)


@lru_cache(maxsize=1)
def shared_aligner() -> PocketsphinxAligner:
    return PocketsphinxAligner()


def pcm16(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16 kHz 16-bit PCM bytes of (frames, channels) or (frames,) float samples."""
    mono = samples.mean(axis=1) if samples.ndim > 1 else samples
    if sample_rate != ALIGN_RATE:
        mono = soxr.resample(mono, sample_rate, ALIGN_RATE, quality="HQ")
    return (np.clip(mono, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
