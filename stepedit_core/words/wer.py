"""Word error rate of a transcript against its text; character error rate for Chinese and
Japanese, which are written without spaces between words.

Both sides are normalised first: Unicode NFKC, lower case, punctuation and symbols removed,
whitespace collapsed. The rate is the edit distance (substitutions, deletions, insertions) over
the length of the text, so it may exceed 1 when the transcript is much longer than the text.
"""

from __future__ import annotations

import unicodedata

CHARACTER_LANGUAGES = ("zh", "ja", "cmn", "yue")


def uses_characters(language: str | None) -> bool:
    return bool(language) and language.replace("_", "-").lower().split("-")[0] in (
        CHARACTER_LANGUAGES
    )


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
    """Words, or characters (spaces dropped) for the character languages."""
    clean = normalise(text)
    return list(clean.replace(" ", "")) if uses_characters(language) else clean.split()


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
