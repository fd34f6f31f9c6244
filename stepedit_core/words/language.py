"""The manifest's `language` codes (`en`, `en-US`, `zh_CN`, empty) as the words features need
them: which rows the English aligner takes, which are scored by characters."""

from __future__ import annotations

CHARACTER_LANGUAGES = ("zh", "ja", "cmn", "yue")  # written without spaces between words


def base_language(language: str | None) -> str:
    return (language or "").replace("_", "-").lower().split("-")[0]


def is_english(language: str | None) -> bool:
    """No language given counts as English (the aligner's only model)."""
    return base_language(language) in ("", "en", "eng")


def uses_characters(language: str | None) -> bool:
    return base_language(language) in CHARACTER_LANGUAGES
