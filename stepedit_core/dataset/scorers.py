"""Margin scorers: how clearly an edited version differs from its neutral version, on 1-10.

A scorer sees one pair (the neutral and the edited audio and the attribute that was edited)
and returns a `Margin`. Scorers are chosen by name (choose_scorer.py): `objective` (what the edit
measurably did, see objective.py) and `judge` (an audio model asked how clearly the attribute
differs, see judge_scorer.py). Nothing else in the margin set depends on how a margin was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import EditSpec

MARGIN_MIN, MARGIN_MAX = 1, 10


@dataclass(frozen=True)
class Pair:
    """One (neutral, edited) pair as a scorer sees it."""

    attribute: EditSpec
    neutral: Audio
    edited: Audio


@dataclass(frozen=True)
class Margin:
    """`value` 1-10, or None with `note` saying why there is none; `basis` names what was
    measured and `measures` holds the numbers it came from (written to the set)."""

    value: int | None
    basis: str
    measure: float | None = None
    measures: dict[str, float | None] = field(default_factory=dict)
    note: str | None = None


class MarginScorer(Protocol):
    name: str

    def refusal(self, attribute: EditSpec) -> str | None:
        """Why this scorer can not score pairs of `attribute` (None: it can)."""

    def score(self, pair: Pair) -> Margin: ...

    def describe(self) -> str:
        """How margins are made, in Markdown (the data card shows it)."""


class ScorerUnavailable(ValueError):
    """The scorer asked for does not exist (or can not score an attribute asked for)."""


SCORERS = ("objective", "judge")  # made by choose_scorer.py
