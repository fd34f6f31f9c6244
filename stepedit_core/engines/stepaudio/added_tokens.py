"""The added tokens of `tokenizer_config.json` applied to the text tokenizer as the reference does.

The reference (transformers 4.53.3 with tokenizers 0.21) finishes building the fast tokenizer by
handing its backend one `add_tokens` list:

1. every `added_tokens_decoder` entry, in id order, unless the backend already holds an added
   token with the same content *and* the same flags (`normalized`, `lstrip`, `rstrip`,
   `single_word`, `special`): an entry for a piece the sentencepiece model already defines is
   added again when its flags differ, and its flags then replace the piece's;
2. then the special tokens (bos, eos, unk, sep, pad, cls, mask, additional) that are neither
   among the backend's added tokens nor in the list yet;
3. every token of the list that is a special token by name is marked special (an entry that
   leaves `normalized` out then stops being normalised as well).

tokenizers 0.21 keeps every entry it was ever given for a content and matches the content in the
raw text (before normalisation) when any of them has `normalized` false; later releases keep
only the last entry. `reference_tokens` gives each token the flag 0.21's bookkeeping ends with, so
whichever tokenizers is installed the backend splits text where the reference's does.
"""

from __future__ import annotations

from typing import Any

FLAGS = ("single_word", "lstrip", "rstrip", "normalized", "special")


def added_token(entry: dict) -> Any:
    """`AddedToken(**entry)` as the reference builds it from the config: flags that the entry
    leaves out take the library's defaults (an absent `normalized` follows `special`, also when
    `special` is changed later)."""
    from tokenizers import AddedToken

    return AddedToken(entry["content"], **{k: bool(entry[k]) for k in FLAGS if k in entry})


def special_token_objects(
    special_values: tuple[str | dict, ...], decoder_entries: tuple[dict, ...]
) -> list[Any]:
    """The special tokens as the reference holds them: a config string that names an
    `added_tokens_decoder` entry becomes that entry's AddedToken, an AddedToken dict an
    AddedToken, other strings stay strings; deduplicated by text, in attribute order."""
    by_text = {entry["content"]: entry for entry in decoder_entries}
    tokens: list[Any] = []
    seen: set[str] = set()
    for value in special_values:
        if isinstance(value, dict):
            token: Any = added_token({k: v for k, v in value.items() if k != "__type"})
        elif value in by_text:
            token = added_token(by_text[value])
        else:
            token = value
        if str(token) not in seen:
            seen.add(str(token))
            tokens.append(token)
    return tokens


def reference_additions(
    backend: Any, decoder_entries: tuple[dict, ...], specials: list[Any], special_texts: set[str]
) -> list[Any]:
    """The list the reference passes to `add_tokens` (steps 1-3 of the module text). The
    membership tests use the library's own AddedToken equality on purpose (content and every
    flag; never equal to a str): they decide what is added again."""
    from tokenizers import AddedToken

    decoder = backend.get_added_tokens_decoder()
    present = {repr(token) for token in decoder.values()}
    to_add: list[Any] = [
        token for token in map(added_token, decoder_entries) if repr(token) not in present
    ]
    encoder = [decoder[i].content for i in sorted(decoder)] + [str(t) for t in to_add]
    to_add += [t for t in specials if t not in encoder and t not in to_add]
    tokens = []
    for token in to_add:
        if isinstance(token, str):
            tokens.append(AddedToken(token, special=token in special_texts))
        else:
            token.special = token.special or token.content in special_texts
            tokens.append(token)
    return tokens


def _with_normalized(token: Any, normalized: bool) -> Any:
    from tokenizers import AddedToken

    flags = {k: getattr(token, k) for k in FLAGS if k != "normalized"}
    return AddedToken(token.content, normalized=normalized, **flags)


def reference_tokens(existing: list[Any], tokens: list[Any]) -> list[Any]:
    """`tokens` with `normalized` set as tokenizers 0.21 ends up matching each content.

    0.21 records an entry for a content when it first becomes special, and when it is added
    (not equal to the current token) while not special; the content is matched in the raw text
    when any recorded entry is not normalised. `existing` are the backend's added tokens, each
    recorded once when it was built.
    """
    special = {t.content for t in existing if t.special}
    current = {t.content: t for t in existing}
    raw = {t.content: not t.normalized for t in existing}

    def record(token: Any) -> None:
        raw[token.content] = raw.get(token.content, False) or not token.normalized

    for token in tokens:
        if token.special and token.content and token.content not in special:
            special.add(token.content)
            record(token)
    for token in tokens:
        if not token.content or current.get(token.content) == token:
            continue
        current[token.content] = token
        if token.content not in special:
            record(token)
    return [
        _with_normalized(t, not raw[t.content])
        if t.content in raw and t.normalized == raw[t.content]
        else t
        for t in tokens
    ]


def apply(
    backend: Any,
    decoder_entries: tuple[dict, ...],
    special_values: tuple[str | dict, ...],
    special_texts: set[str],
) -> None:
    """Add the config's added tokens and missing special tokens to `backend` as the reference."""
    specials = special_token_objects(special_values, decoder_entries)
    tokens = reference_additions(backend, decoder_entries, specials, special_texts)
    if tokens:
        existing = list(backend.get_added_tokens_decoder().values())
        backend.add_tokens(reference_tokens(existing, tokens))
