"""Margin scorers: how clearly an edited version differs from its neutral version, on 1-10.

A scorer sees one pair (the neutral and the edited audio and the attribute that was edited)
and returns a `Margin`. Scorers are looked up by name in `SCORERS`; `objective` (what the edit
measurably did, see objective.py) is the one there is. A judge-based scorer plugs in by adding
an entry: nothing else in the margin set depends on how a margin was made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from stepedit_core.audio import Audio
from stepedit_core.edits import EditSpec

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


def make_scorer(name: str, dnsmos: bool = False) -> MarginScorer:
    """The scorer called `name`; `dnsmos`: the objective scorer also measures DNSMOS for
    denoise (the qc-heavy extra)."""
    from stepedit_core.dataset.objective import ObjectiveScorer

    if name != "objective":
        raise ScorerUnavailable(f"unknown margin scorer {name!r}; available: {', '.join(SCORERS)}")
    return ObjectiveScorer(dnsmos=dnsmos)


SCORERS = ("objective",)
