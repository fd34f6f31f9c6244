"""Word error rate of a transcript against its text; character error rate for Chinese and
Japanese, which are written without spaces between words.

Both sides are normalised first: Unicode NFKC, lower case, punctuation and symbols removed,
whitespace collapsed, and in English numbers written out ("11" is "eleven"). The rate is the
edit distance (substitutions, deletions, insertions) over the length of the text, so it may
exceed 1 when the transcript is much longer than the text.
"""

from __future__ import annotations

import unicodedata

from stepedit_core.words.language import is_english, uses_characters
from stepedit_core.words.numbers import spell_numbers


def normalise(text: str) -> str:
    kept = []
    for ch in unicodedata.normalize("NFKC", text).lower():
        category = unicodedata.category(ch)
        if ch == "'" or category[0] not in "PS":
            kept.append(ch)
        else:
            kept.append(" ")
    return " ".join("".join(kept).replace(" '", " ").replace("' ", " ").split())


def units(text: str, language: str | None) -> list[str]:
    """Words, or characters (spaces dropped) for the character languages. English numbers
    count as the words they are read as ("11" and "eleven" are the same)."""
    if uses_characters(language):
        return list(normalise(text).replace(" ", ""))
    if is_english(language):
        text = spell_numbers(text)
    return normalise(text).split()


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def error_rate(text: str, transcript: str, language: str | None = None) -> float | None:
    """WER (or CER) of `transcript` against `text`; None when the text has nothing to compare."""
    ref, hyp = units(text, language), units(transcript, language)
    if not ref:
        return None
    return edit_distance(ref, hyp) / len(ref)
