"""Dual-codebook audio tokens: interleaving, the `<audio_N>` text form, LLM ids, validation.

A *code* is what the project stores and the decoder consumes: 0..1023 for the linguistic stream
(vq02, 16.7 Hz) and 1024..5119 for the semantic stream (vq06 code + 1024, 25 Hz). Codes come in
groups of 2 vq02 + 3 vq06 (0.12 s of audio, 41.67 codes per second). In the LLM, code N is the
token `<audio_N>` with id 65536 + N.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

VQ02_SIZE = 1024
VQ06_SIZE = 4096
N_CODES = VQ02_SIZE + VQ06_SIZE  # 5120
AUDIO_ID_OFFSET = 65536
GROUP = (2, 3)  # vq02, vq06 codes per group
GROUP_LEN = sum(GROUP)
GROUP_SECONDS = 0.12
CODES_PER_SECOND = GROUP_LEN / GROUP_SECONDS  # 41.67

_TOKEN_RE = re.compile(r"<audio_(\d+)>")


class TokenError(ValueError):
    """A token sequence that is not well-formed dual-codebook audio."""


def interleave(vq02: Sequence[int], vq06: Sequence[int]) -> list[int]:
    """Merge the two streams into codes, 2 vq02 then 3 vq06 per group; a trailing partial
    group of either stream is dropped (as the public tokenizer does)."""
    groups = min(len(vq02) // GROUP[0], len(vq06) // GROUP[1])
    codes: list[int] = []
    for g in range(groups):
        codes.extend(int(c) for c in vq02[2 * g : 2 * g + 2])
        codes.extend(VQ02_SIZE + int(c) for c in vq06[3 * g : 3 * g + 3])
    return codes


def split(codes: Sequence[int]) -> tuple[list[int], list[int]]:
    """Inverse of `interleave` for a validated code sequence: (vq02, vq06 without offset)."""
    validate_codes(codes)
    vq02: list[int] = []
    vq06: list[int] = []
    for start in range(0, len(codes), GROUP_LEN):
        vq02.extend(codes[start : start + 2])
        vq06.extend(c - VQ02_SIZE for c in codes[start + 2 : start + 5])
    return vq02, vq06


def to_text(codes: Iterable[int]) -> str:
    """`<audio_N>` tokens, concatenated without separators."""
    return "".join(f"<audio_{int(c)}>" for c in codes)


def from_text(text: str) -> list[int]:
    """Parse a `<audio_N>...` string back into codes (strict: nothing else may appear)."""
    codes: list[int] = []
    pos = 0
    stripped = text.strip()
    for match in _TOKEN_RE.finditer(stripped):
        if match.start() != pos:
            raise TokenError(
                f"unexpected text in audio token string at {pos}: "
                f"{stripped[pos : match.start()][:20]!r}"
            )
        codes.append(int(match.group(1)))
        pos = match.end()
    if pos != len(stripped):
        raise TokenError(f"unexpected text in audio token string at {pos}: {stripped[pos:][:20]!r}")
    for code in codes:
        if not 0 <= code < N_CODES:
            raise TokenError(f"audio token <audio_{code}> is outside 0..{N_CODES - 1}")
    return codes


def to_ids(codes: Iterable[int]) -> list[int]:
    return [AUDIO_ID_OFFSET + int(c) for c in codes]


def validate_codes(codes: Sequence[int]) -> None:
    """Raise TokenError unless `codes` is a non-empty run of complete 2+3 groups."""
    if len(codes) == 0:
        raise TokenError("no audio tokens")
    if len(codes) % GROUP_LEN:
        raise TokenError(
            f"{len(codes)} audio tokens is not a whole number of groups of {GROUP_LEN} "
            f"(2 vq02 + 3 vq06)"
        )
    for i, code in enumerate(codes):
        slot = i % GROUP_LEN
        if slot < GROUP[0]:
            if not 0 <= code < VQ02_SIZE:
                raise TokenError(
                    f"token {i} (group {i // GROUP_LEN}, slot {slot}) is {code}: expected a "
                    f"vq02 code 0..{VQ02_SIZE - 1}"
                )
        elif not VQ02_SIZE <= code < N_CODES:
            raise TokenError(
                f"token {i} (group {i // GROUP_LEN}, slot {slot}) is {code}: expected a "
                f"vq06 code {VQ02_SIZE}..{N_CODES - 1}"
            )


def ids_to_codes(ids: Sequence[int]) -> list[int]:
    """Generated LLM ids (EOS already removed) -> validated codes (a trailing partial group
    padded, see `pad_partial_group`); TokenError otherwise."""
    if len(ids) == 0:
        raise TokenError("the model generated no audio tokens")
    outside = [i for i, t in enumerate(ids) if not AUDIO_ID_OFFSET <= t < AUDIO_ID_OFFSET + N_CODES]
    if outside:
        first = outside[0]
        raise TokenError(
            f"{len(outside)} of {len(ids)} generated ids are not audio tokens "
            f"(first at position {first}: id {ids[first]}; audio ids are "
            f"{AUDIO_ID_OFFSET}..{AUDIO_ID_OFFSET + N_CODES - 1})"
        )
    codes = pad_partial_group([int(t) - AUDIO_ID_OFFSET for t in ids])
    validate_codes(codes)
    return codes


def pad_partial_group(codes: Sequence[int]) -> list[int]:
    """Complete a trailing partial 2+3 group the way the public decoder does before decoding:
    a missing vq02 slot gets code 0, a missing vq06 slot code 1024 (vq06 code 0). The model
    sometimes stops mid-group; the release decodes such output rather than rejecting it."""
    out = [int(c) for c in codes]
    for slot in range(len(out) % GROUP_LEN, GROUP_LEN if len(out) % GROUP_LEN else 0):
        out.append(0 if slot < GROUP[0] else VQ02_SIZE)
    return out


def seconds(n_codes: int) -> float:
    """Audio duration that `n_codes` codes stand for."""
    return n_codes / CODES_PER_SECOND
