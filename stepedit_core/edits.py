"""The edit vocabulary shared by every engine, and the `TYPE[=OPTION]` syntax.

The model's vocabulary (emotion, style, speed, paralinguistic, denoise, vad, clone) is taken
verbatim from Step-Audio-EditX; `loudness` and numeric speed factors are signal-only additions.
Whether an engine can run a given edit is the engine's business (its capability table), not this
module's: here we only decide whether an edit is well formed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EMOTIONS = (
    "happy",
    "angry",
    "sad",
    "humour",
    "confusion",
    "disgusted",
    "empathy",
    "embarrass",
    "fear",
    "surprised",
    "excited",
    "depressed",
    "coldness",
    "admiration",
    "remove",
)
STYLES = (
    "serious",
    "arrogant",
    "child",
    "older",
    "girl",
    "pure",
    "sister",
    "sweet",
    "ethereal",
    "whisper",
    "gentle",
    "recite",
    "generous",
    "act_coy",
    "warm",
    "shy",
    "comfort",
    "authority",
    "chat",
    "radio",
    "soulful",
    "story",
    "vivid",
    "program",
    "news",
    "advertising",
    "roar",
    "murmur",
    "shout",
    "deeply",
    "loudly",
    "remove",
    "exaggerated",
)
SPEEDS = ("faster", "slower", "more faster", "more slower")
PARALINGUISTIC_TAGS = (
    "[Breathing]",
    "[Laughter]",
    "[Surprise-oh]",
    "[Confirmation-en]",
    "[Uhm]",
    "[Surprise-ah]",
    "[Surprise-wa]",
    "[Sigh]",
    "[Question-ei]",
    "[Dissatisfaction-hnn]",
)

# Named speed options as playback-rate factors (1.25 = plays 1.25x as fast, duration x 0.8).
# One "more" step compounds the plain step.
SPEED_FACTORS = {"faster": 1.25, "slower": 0.8, "more faster": 1.5, "more slower": 2 / 3}
SPEED_FACTOR_RANGE = (0.25, 4.0)

# Loudness profiles: integrated LUFS target and true-peak ceiling (dBTP).
# `acx` is special: RMS window -23..-18 dB with sample peaks <= -3 dBFS (handled by the engine).
LOUDNESS_PROFILES = {
    "ebu": (-23.0, -1.0),
    "ebu-r128": (-23.0, -1.0),
    "atsc": (-24.0, -2.0),
    "netflix": (-27.0, -2.0),
    "acx": (-20.0, -3.0),
}
LOUDNESS_RANGE = (-70.0, -5.0)

EDIT_TYPES = (
    "emotion",
    "style",
    "speed",
    "paralinguistic",
    "denoise",
    "vad",
    "clone",
    "loudness",
)
# Edits whose instruction quotes the transcript of the audio.
NEEDS_TEXT = frozenset({"emotion", "style", "speed", "paralinguistic", "clone"})
# Edits that say something new: they need `target_text`.
NEEDS_TARGET_TEXT = frozenset({"paralinguistic", "clone"})

CHAIN_SEPARATOR = ";"


class EditError(ValueError):
    """An edit string that is not part of the vocabulary."""


@dataclass(frozen=True)
class EditSpec:
    """One edit: a type and an optional option, e.g. `emotion=happy`, `speed=1.25`, `denoise`."""

    type: str
    option: str | None = None

    def __str__(self) -> str:
        return self.type if self.option is None else f"{self.type}={self.option}"

    @property
    def speed_factor(self) -> float:
        """Playback-rate factor of a speed edit (named options map to SPEED_FACTORS)."""
        if self.type != "speed" or self.option is None:
            raise EditError(f"{self} is not a speed edit")
        return SPEED_FACTORS.get(self.option) or float(self.option)

    @property
    def is_numeric(self) -> bool:
        return self.option is not None and _as_float(self.option) is not None


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _choices(options: tuple[str, ...]) -> str:
    return ", ".join(options)


def parse_edit(text: str) -> EditSpec:
    """Parse `TYPE` or `TYPE=OPTION` and check that the option belongs to the type."""
    raw = text.strip()
    if not raw:
        raise EditError("empty edit; expected TYPE or TYPE=OPTION")
    kind, _, option = raw.partition("=")
    kind = kind.strip().lower()
    opt: str | None = " ".join(option.split()) if "=" in raw else None
    if opt == "":
        raise EditError(f"edit {raw!r} has an empty option")
    if kind not in EDIT_TYPES:
        raise EditError(f"unknown edit type {kind!r}; valid types: {_choices(EDIT_TYPES)}")
    if kind == "emotion":
        _require_choice(kind, opt, EMOTIONS)
    elif kind == "style":
        _require_choice(kind, opt, STYLES)
    elif kind == "speed":
        if opt is None:
            raise EditError(f"speed needs an option: {_choices(SPEEDS)} or a factor such as 1.25")
        if opt not in SPEEDS:
            factor = _as_float(opt)
            lo, hi = SPEED_FACTOR_RANGE
            if factor is None or not lo <= factor <= hi:
                raise EditError(
                    f"unknown speed option {opt!r}; valid options: {_choices(SPEEDS)}, "
                    f"or a factor from {lo} to {hi}"
                )
    elif kind == "loudness":
        if opt is None:
            raise EditError(
                f"loudness needs a target: a profile ({_choices(tuple(LOUDNESS_PROFILES))}) "
                "or integrated LUFS such as -23"
            )
        if opt.lower() in LOUDNESS_PROFILES:
            opt = opt.lower()
        else:
            lufs = _as_float(opt)
            lo, hi = LOUDNESS_RANGE
            if lufs is None or not lo <= lufs <= hi:
                raise EditError(
                    f"unknown loudness option {opt!r}; valid options: "
                    f"{_choices(tuple(LOUDNESS_PROFILES))}, or LUFS from {lo} to {hi}"
                )
    elif kind == "vad":
        if opt is not None:
            seconds = _as_float(opt)
            if seconds is None or not 0.05 <= seconds <= 5.0:
                raise EditError(
                    f"vad option {opt!r} is not a pause length; expected seconds from 0.05 to 5"
                )
    elif opt is not None:  # paralinguistic, denoise, clone take no option
        raise EditError(f"{kind} takes no option (got {opt!r})")
    return EditSpec(kind, opt)


def _require_choice(kind: str, option: str | None, options: tuple[str, ...]) -> None:
    if option is None:
        raise EditError(f"{kind} needs an option; valid options: {_choices(options)}")
    if option not in options:
        raise EditError(f"unknown {kind} option {option!r}; valid options: {_choices(options)}")


def parse_chain(text: str) -> tuple[EditSpec, ...]:
    """Parse a manifest `edit` cell: one or more edits separated by `;`, applied in order."""
    parts = [p for p in text.split(CHAIN_SEPARATOR) if p.strip()]
    if not parts:
        raise EditError("empty edit; expected TYPE or TYPE=OPTION (several joined by ';')")
    return tuple(parse_edit(p) for p in parts)


def format_chain(chain: tuple[EditSpec, ...] | list[EditSpec]) -> str:
    return CHAIN_SEPARATOR.join(str(e) for e in chain)
