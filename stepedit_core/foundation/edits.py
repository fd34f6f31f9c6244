"""The edit vocabulary: one declarative table, `EditSpec`, and the `TYPE[=OPTION]` syntax.

The model's vocabulary (emotion, style, speed, paralinguistic, denoise, vad, clone) is taken
verbatim from Step-Audio-EditX; `loudness`, numeric speed factors and a vad pause length are
signal-only additions. `EDIT_TABLE` says, for every edit type, its options or numeric range,
whether it needs a transcript or a target text, whether it changes what the audio says, and
which engines run it with which options. Parsing, row checks, the CLI's help, `stepedit engines`
and the prompt builder all read this table. Strings exist only at the edges (command line,
Parquet cells, run.json); inside the product an edit is an `EditSpec`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

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
VAD_PAUSE_RANGE = (0.05, 5.0)  # seconds a pause may last after vad (signal engine)

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

# The fillers edit: which fillers it cuts (default: DEFAULT_FILLERS); `list` only records them.
FILLER_WORDS = ("um", "uh", "uhm", "er", "erm", "ah", "hmm", "hm", "mm")
DEFAULT_FILLERS = ("um", "uh", "uhm", "er", "ah", "hmm")
FILLERS_LIST_ONLY = "list"

CHAIN_SEPARATOR = ";"

# Engine names as the registry knows them (kept here so the table can say who runs what).
SIGNAL = "signal"
STEPAUDIO = "step-audio-editx"

# What an engine accepts of a type: every well-formed option, only the named choices, or the
# bare type with no option.
Accepts = Literal["any", "choices", "bare"]


class EditError(ValueError):
    """An edit string that is not part of the vocabulary."""


@dataclass(frozen=True)
class EditType:
    """One row of the edit table."""

    name: str
    option: Literal["required", "optional", "none"]
    choices: tuple[str, ...] = ()  # named options
    numeric: tuple[float, float] | None = None  # range of a numeric option, inclusive
    numeric_meaning: str = ""  # what the number is, for messages and help
    needs_text: bool = False  # the model's instruction quotes the transcript (`text`)
    needs_target_text: bool = False  # says something new: needs `target_text`
    changes_text: bool = False  # after the edit, the audio says `target_text`
    engines: dict[str, Accepts] = field(default_factory=dict)
    case_insensitive: bool = False  # choices match regardless of case (profile names)
    # an option that is neither a choice nor a number: canonical form, or EditError
    parse_option: Callable[[str], str] | None = None
    option_help: str = ""  # what such an option is, for messages and help

    def normalize(self, option: str | None) -> str | None:
        """The canonical option, or EditError naming what this type accepts."""
        if option is None:
            if self.option == "required":
                raise EditError(
                    f"{self.name} needs an option; valid options: {self.options_text()}"
                )
            return None
        if self.option == "none":
            raise EditError(f"{self.name} takes no option (got {option!r})")
        if self.parse_option is not None:
            return self.parse_option(option)
        key = option.lower() if self.case_insensitive else option
        if key in self.choices:
            return key
        if self.numeric is not None:
            value = _as_float(option)
            lo, hi = self.numeric
            if value is not None and lo <= value <= hi:
                return option
        raise EditError(
            f"unknown {self.name} option {option!r}; valid options: {self.options_text()}"
        )

    def options_text(self) -> str:
        if self.option_help:
            return self.option_help
        parts = [", ".join(self.choices)] if self.choices else []
        if self.numeric is not None:
            lo, hi = self.numeric
            parts.append(f"{self.numeric_meaning} from {lo} to {hi}")
        return ", or ".join(parts) if parts else "none"

    def accepts(self, engine: str, spec: EditSpec) -> bool:
        """Whether `engine` runs this edit (an EditSpec built by hand must be well formed)."""
        mode = self.engines.get(engine)
        if mode is None or spec.type != self.name:
            return False
        try:
            if self.normalize(spec.option) != spec.option:
                return False
        except EditError:
            return False
        if mode == "bare":
            return spec.option is None
        if mode == "choices":
            return spec.option in self.choices if spec.option is not None else True
        return True

    def options_for(self, engine: str) -> str:
        """Human text of the options `engine` accepts (for help and `stepedit engines`)."""
        mode = self.engines.get(engine)
        if mode is None:
            return "not supported"
        if mode == "bare" or self.option == "none":
            return "no option"
        text = ", ".join(self.choices) if mode == "choices" else self.options_text()
        return text if self.option == "required" else f"optional: {text}"


EDIT_TABLE: dict[str, EditType] = {
    t.name: t
    for t in (
        EditType(
            "emotion",
            "required",
            choices=EMOTIONS,
            needs_text=True,
            engines={STEPAUDIO: "any"},
        ),
        EditType(
            "style",
            "required",
            choices=STYLES,
            needs_text=True,
            engines={STEPAUDIO: "any"},
        ),
        EditType(
            "speed",
            "required",
            choices=SPEEDS,
            numeric=SPEED_FACTOR_RANGE,
            numeric_meaning="a playback-rate factor",
            needs_text=True,
            engines={SIGNAL: "any", STEPAUDIO: "choices"},
        ),
        EditType(
            "paralinguistic",
            "none",
            needs_text=True,
            needs_target_text=True,
            changes_text=True,
            engines={STEPAUDIO: "any"},
        ),
        EditType("denoise", "none", engines={SIGNAL: "any", STEPAUDIO: "any"}),
        EditType(
            "vad",
            "optional",
            numeric=VAD_PAUSE_RANGE,
            numeric_meaning="a longest pause in seconds",
            engines={SIGNAL: "any", STEPAUDIO: "bare"},
        ),
        EditType(
            "clone",
            "none",
            needs_text=True,
            needs_target_text=True,
            changes_text=True,
            engines={STEPAUDIO: "any"},
        ),
        EditType(
            "loudness",
            "required",
            choices=tuple(LOUDNESS_PROFILES),
            numeric=LOUDNESS_RANGE,
            numeric_meaning="integrated LUFS",
            engines={SIGNAL: "any"},
            case_insensitive=True,
        ),
        EditType(
            "fillers",
            "optional",
            parse_option=lambda option: _fillers_option(option),
            option_help=(
                f"fillers to cut, comma-separated, from {', '.join(FILLER_WORDS)} (default "
                f"{', '.join(DEFAULT_FILLERS)}); add `{FILLERS_LIST_ONLY}` to only record them"
            ),
            engines={SIGNAL: "any"},
        ),
    )
}
EDIT_TYPES = tuple(EDIT_TABLE)


@dataclass(frozen=True)
class EditSpec:
    """One edit: a type and an optional option, e.g. `emotion=happy`, `speed=1.25`, `denoise`."""

    type: str
    option: str | None = None

    def __str__(self) -> str:
        return self.type if self.option is None else f"{self.type}={self.option}"

    @property
    def kind(self) -> EditType:
        return EDIT_TABLE[self.type]

    @property
    def speed_factor(self) -> float:
        """Playback-rate factor of a speed edit (named options map to SPEED_FACTORS)."""
        if self.type != "speed" or self.option is None:
            raise EditError(f"{self} is not a speed edit")
        return SPEED_FACTORS.get(self.option) or float(self.option)


def _fillers_option(option: str) -> str:
    """`um,uh`, `list` or `list,um`: known fillers (and `list`), in order, once each."""
    picked: list[str] = []
    for part in option.lower().replace(" ", ",").split(","):
        if not part:
            continue
        if part != FILLERS_LIST_ONLY and part not in FILLER_WORDS:
            raise EditError(
                f"unknown filler {part!r}; valid fillers: {', '.join(FILLER_WORDS)} "
                f"(and {FILLERS_LIST_ONLY!r} to only record the cuts)"
            )
        if part not in picked:
            picked.append(part)
    if not picked:
        raise EditError(f"fillers option {option!r} names no filler")
    return ",".join(picked)


def fillers_of(spec: EditSpec) -> tuple[tuple[str, ...], bool]:
    """A fillers edit's (fillers to find, list only): `fillers=list` finds the default set."""
    parts = tuple((spec.option or "").split(",")) if spec.option else ()
    chosen = tuple(p for p in parts if p != FILLERS_LIST_ONLY) or DEFAULT_FILLERS
    return chosen, FILLERS_LIST_ONLY in parts


def _as_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_edit(text: str | EditSpec) -> EditSpec:
    """Parse `TYPE` or `TYPE=OPTION` and check the option against the table."""
    if isinstance(text, EditSpec):
        text = str(text)
    raw = text.strip()
    if not raw:
        raise EditError("empty edit; expected TYPE or TYPE=OPTION")
    name, _, option = raw.partition("=")
    name = name.strip().lower()
    opt: str | None = " ".join(option.split()) if "=" in raw else None
    if opt == "":
        raise EditError(f"edit {raw!r} has an empty option")
    if name not in EDIT_TABLE:
        raise EditError(f"unknown edit type {name!r}; valid types: {', '.join(EDIT_TYPES)}")
    return EditSpec(name, EDIT_TABLE[name].normalize(opt))


def parse_chain(text: str) -> tuple[EditSpec, ...]:
    """Parse a manifest `edit` cell: one or more edits separated by `;`, applied in order."""
    parts = [p for p in text.split(CHAIN_SEPARATOR) if p.strip()]
    if not parts:
        raise EditError("empty edit; expected TYPE or TYPE=OPTION (several joined by ';')")
    return tuple(parse_edit(p) for p in parts)


def format_chain(chain: tuple[EditSpec, ...] | list[EditSpec]) -> str:
    return CHAIN_SEPARATOR.join(str(e) for e in chain)


def engines_running(spec: EditSpec) -> list[str]:
    """Names of the engines that run this edit."""
    kind = EDIT_TABLE.get(spec.type)
    return [] if kind is None else [name for name in kind.engines if kind.accepts(name, spec)]


def refusal(engine: str, spec: EditSpec) -> str | None:
    """Why `engine` can not run `spec` (naming what it accepts instead), or None if it can."""
    kind = EDIT_TABLE.get(spec.type)
    if kind is None or engine not in kind.engines:
        return (
            f"{engine} does not support edit type {spec.type!r}; "
            f"supported: {', '.join(types_for(engine))}"
        )
    if kind.accepts(engine, spec):
        return None
    if spec.option is not None and kind.options_for(engine) == "no option":
        return (
            f"{engine}: {spec.type} takes no option (got {spec.option!r}); use plain '{spec.type}'"
        )
    got = "no option" if spec.option is None else f"option {spec.option!r}"
    return f"{engine}: {spec.type} got {got}; valid options: {kind.options_for(engine)}"


def types_for(engine: str) -> tuple[str, ...]:
    return tuple(name for name, kind in EDIT_TABLE.items() if engine in kind.engines)


def vocabulary_help() -> str:
    """One line per edit type: its options and which engines run it (for the CLI's help)."""
    return "\n".join(
        f"  {kind.name}: {kind.options_text()} [{', '.join(kind.engines)}]"
        for kind in EDIT_TABLE.values()
    )


def markdown_table() -> str:
    """The README's table of edits, made from `EDIT_TABLE`."""
    restricted = {"any": "", "choices": " (named options only)", "bare": " (no option)"}
    lines = [
        "| type | options | needs | changes the text | engines |",
        "|---|---|---|---|---|",
    ]
    for kind in EDIT_TABLE.values():
        flags = (("`text`", kind.needs_text), ("`target_text`", kind.needs_target_text))
        needs = ", ".join(name for name, on in flags if on) or "-"
        option = kind.options_text() if kind.option != "none" else "no option"
        if kind.option == "optional":
            option = f"optional: {option}"
        engines = ", ".join(f"{name}{restricted[mode]}" for name, mode in kind.engines.items())
        changes = "yes" if kind.changes_text else "no"
        lines.append(f"| `{kind.name}` | {option} | {needs} | {changes} | {engines} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m stepedit_core.foundation.edits > table, for the README
    print(markdown_table(), end="")
