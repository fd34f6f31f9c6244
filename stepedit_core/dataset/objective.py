"""The objective margin: what a signal edit measurably did to the clip, mapped to 1-10.

Each attribute has one measure and two anchors (`ANCHORS`): the measure at which the margin is 1
(nothing changed) and the one at which it is 10 (an unmistakable change). Between them the
margin is linear, rounded to the nearest whole number, and clipped to 1..10; a change in the
wrong direction scores 1. `markdown_table()` is the README's table of this mapping.

The named speeds (faster x1.25, slower x0.8) land at 7, `more faster`/`more slower` at 10.
Other attributes (emotion, style, paralinguistic) change nothing a signal measure sees: they
need a judge, and this scorer refuses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from stepedit_core.dataset.scorers import MARGIN_MAX, MARGIN_MIN, Margin, Pair, ScorerUnavailable
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.quality import qc

FLOOR_LIMIT_DB = -100.0  # below any audible floor; digital silence (-200) must not count as gain


@dataclass(frozen=True)
class Anchor:
    attribute: str
    basis: str  # the `margin_basis` written to the set
    measure: str  # what is measured, for the README
    at_1: float
    at_10: float
    unit: str = ""


ANCHORS: dict[str, Anchor] = {
    a.attribute: a
    for a in (
        Anchor(
            "speed",
            "speed_change",
            "duration change toward the asked speed: ln(neutral / edited duration), "
            "negated for slower speeds",
            0.0,
            round(math.log(1.4), 4),
            " (duration x1.4 or /1.4)",
        ),
        Anchor(
            "denoise",
            "noise_floor_lowered_db",
            "noise floor lowered (ACX's quietest 0.4 s window; floors under -100 dB read as "
            "-100 dB)",
            0.0,
            20.0,
            " dB",
        ),
        Anchor(
            "denoise_dnsmos",
            "dnsmos_ovrl_gained",
            "with `--dnsmos` (the qc-heavy extra), also the DNSMOS overall score gained; the "
            "`denoise` margin is then the larger of the two",
            0.0,
            1.5,
            " MOS",
        ),
        Anchor(
            "loudness",
            "loudness_moved_lu",
            "integrated loudness moved, either way (BS.1770)",
            0.0,
            12.0,
            " LU",
        ),
        Anchor(
            "vad",
            "pause_share_removed",
            "pause time removed (silero-vad), as a share of the neutral clip's duration",
            0.0,
            0.3,
        ),
    )
}


def markdown_table() -> str:
    lines = [
        "| attribute | `margin_basis` | measure | margin 1 at | margin 10 at |",
        "|---|---|---|---|---|",
    ]
    for a in ANCHORS.values():
        name = a.attribute.split("_")[0]
        lines.append(f"| `{name}` | `{a.basis}` | {a.measure} | {a.at_1:g} | {a.at_10:g}{a.unit} |")
    return "\n".join(lines) + "\n"


def to_margin(measure: float, anchor: Anchor) -> int:
    """Linear from the anchor's `at_1` (1) to `at_10` (10), rounded half up, clipped."""
    low, high = anchor.at_1, anchor.at_10
    share = (measure - low) / (high - low)
    value = MARGIN_MIN + (MARGIN_MAX - MARGIN_MIN) * share
    return int(min(MARGIN_MAX, max(MARGIN_MIN, math.floor(value + 0.5))))


def _speed(pair: Pair) -> Margin:
    ratio = pair.edited.duration / pair.neutral.duration
    toward = 1.0 if pair.attribute.speed_factor > 1.0 else -1.0  # faster: shorter is the aim
    change = round(toward * math.log(1.0 / ratio), 5)
    return Margin(
        to_margin(change, ANCHORS["speed"]),
        ANCHORS["speed"].basis,
        change,
        {"duration_ratio": round(ratio, 5)},
    )


def _floor(audio: Audio) -> float:
    value = qc.noise_floor_db(audio.samples, audio.sample_rate)
    return max(FLOOR_LIMIT_DB, value if value is not None else FLOOR_LIMIT_DB)


def _denoise(pair: Pair) -> Margin:
    lowered = round(_floor(pair.neutral) - _floor(pair.edited), 2)
    basis = ANCHORS["denoise"].basis
    return Margin(to_margin(lowered, ANCHORS["denoise"]), basis, lowered, {basis: lowered})


def _with_dnsmos(pair: Pair, floor: Margin) -> Margin:
    """The denoise margin as the larger of the floor's and the DNSMOS gain's."""
    before = qc.dnsmos(qc.mono_16k(pair.neutral.samples, pair.neutral.sample_rate))
    after = qc.dnsmos(qc.mono_16k(pair.edited.samples, pair.edited.sample_rate))
    gained = round(after["dnsmos_ovrl"] - before["dnsmos_ovrl"], 3)
    anchor = ANCHORS["denoise_dnsmos"]
    value = max(floor.value or MARGIN_MIN, to_margin(gained, anchor))
    return replace(floor, value=value, measures={**floor.measures, anchor.basis: gained})


def _loudness(pair: Pair) -> Margin:
    before, why_before = qc.loudness_lufs(pair.neutral.samples, pair.neutral.sample_rate)
    after, why_after = qc.loudness_lufs(pair.edited.samples, pair.edited.sample_rate)
    if before is None or after is None:
        note = f"loudness not measurable: {why_before or why_after}"
        return Margin(None, ANCHORS["loudness"].basis, note=note)
    moved = round(abs(after - before), 2)
    return Margin(
        to_margin(moved, ANCHORS["loudness"]),
        ANCHORS["loudness"].basis,
        moved,
        {"neutral_lufs": before, "edited_lufs": after},
    )


def _pause_s(audio: Audio) -> float:
    spans = qc.speech_spans(audio.samples, audio.sample_rate)
    speech = sum(end - start for start, end in spans)
    return (audio.frames - speech) / audio.sample_rate


def _vad(pair: Pair) -> Margin:
    before, after = _pause_s(pair.neutral), _pause_s(pair.edited)
    share = round((before - after) / pair.neutral.duration, 4)
    return Margin(
        to_margin(share, ANCHORS["vad"]),
        ANCHORS["vad"].basis,
        share,
        {"neutral_pause_s": round(before, 3), "edited_pause_s": round(after, 3)},
    )


MEASURES: dict[str, Callable[[Pair], Margin]] = {
    "speed": _speed,
    "denoise": _denoise,
    "loudness": _loudness,
    "vad": _vad,
}


class ObjectiveScorer:
    name = "objective"

    def __init__(self, dnsmos: bool = False) -> None:
        """`dnsmos`: denoise margins also count the DNSMOS gain (slow: about 0.8 s a pair
        on one core), which needs the qc-heavy extra."""
        if dnsmos and (missing := qc.dnsmos_unavailable()):
            raise ScorerUnavailable(f"--dnsmos: DNSMOS is not available: {missing}")
        self.dnsmos = dnsmos

    def refusal(self, attribute: EditSpec) -> str | None:
        if attribute.type not in MEASURES:
            return (
                f"attribute {attribute}: the objective scorer measures "
                f"{', '.join(MEASURES)} only; {attribute.type} needs a judge"
            )
        if attribute.type == "speed" and math.isclose(attribute.speed_factor, 1.0):
            return f"attribute {attribute}: a speed factor of 1 changes nothing"
        return None

    def describe(self) -> str:
        dnsmos = "on" if self.dnsmos else "off"
        return (
            "What the edit measurably did, linear between two anchors, rounded, clipped to "
            f"1..10; a change in the wrong direction scores 1 (DNSMOS for denoise: {dnsmos}).\n\n"
            + markdown_table()
        )

    def score(self, pair: Pair) -> Margin:
        if pair.neutral.frames == 0 or pair.edited.frames == 0:
            return Margin(None, pair.attribute.type, note="empty audio: nothing to measure")
        margin = MEASURES[pair.attribute.type](pair)
        if pair.attribute.type == "denoise" and self.dnsmos:
            margin = _with_dnsmos(pair, margin)
        if margin.measure is not None and not np.isfinite(margin.measure):
            return Margin(None, margin.basis, note="the measure is not finite")
        return margin
