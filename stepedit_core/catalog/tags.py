"""Paralinguistic tags inside a text, and the text without them.

Step-Audio-EditX reads two kinds of bracketed tags: the paralinguistic tags of its vocabulary
(`[Laughter]`, `[Sigh]`, ... in `edits.PARALINGUISTIC_TAGS`), which ask for a non-verbal sound at
that place, and tags that set the dialect or language of the whole text (`[Sichuanese]`,
`[Cantonese]`, `[Japanese]`, `[Korean]`). A zero-shot clone speaks a text without its
paralinguistic sounds (a later paralinguistic edit adds them), but it must keep every other tag
and every other character: the model's ids change with a single space.
"""

from __future__ import annotations

import re

from stepedit_core.foundation.edits import PARALINGUISTIC_TAGS

_PARALINGUISTIC = re.compile("|".join(re.escape(tag) for tag in PARALINGUISTIC_TAGS))
# characters after which a word starts (a removed tag there takes the space after it along)
_OPENERS = "\"'([{“‘（「『《【"


def _is_blank(char: str | None) -> bool:
    """A space or tab (never a line break: lines are kept as they are)."""
    return char is not None and char != "\n" and char.isspace()


def _starts_word_run(char: str | None) -> bool:
    """Whether the text right before a tag leaves the tag at the start of a run of words."""
    return char is None or char == "\n" or _is_blank(char) or char in _OPENERS


def _attaches_left(char: str | None) -> bool:
    """Whether the text right after a tag belongs to the word before it (`.`, `,`, `。`, end)."""
    return char is None or char == "\n" or not (char.isalnum() or char in _OPENERS)


def remove_paralinguistic_tags(text: str) -> str:
    """`text` without its paralinguistic tags and without the spaces they leave doubled or
    stray; every other character, other tags included, stays exactly as given.

    A tag followed by spaces at the start of a run of words takes those spaces along
    (`"[Laughter] Well, [Sigh] that"` -> `"Well, that"`); a tag after a space and before
    punctuation or the end takes the spaces before it (`"Great [Laughter], today [Sigh]."` ->
    `"Great, today."`); any other tag goes alone (`"今天[Sigh]天气"` -> `"今天天气"`).
    """
    while True:
        match = _PARALINGUISTIC.search(text)
        if match is None:
            return text
        start, end = match.span()
        before = text[start - 1] if start > 0 else None
        after = text[end] if end < len(text) else None
        if _is_blank(after) and _starts_word_run(before):
            while _is_blank(text[end] if end < len(text) else None):
                end += 1
            if end == len(text) or text[end] == "\n":  # nothing follows on this line
                while start > 0 and _is_blank(text[start - 1]):
                    start -= 1
        elif _is_blank(before) and _attaches_left(after):
            while start > 0 and _is_blank(text[start - 1]):
                start -= 1
        text = text[:start] + text[end:]
