"""A margin scorer by its name (`SCORERS`): the choice sits above the scorers, so that their
shared types in scorers.py import none of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stepedit_core.dataset.scorers import SCORERS, MarginScorer, ScorerUnavailable

if TYPE_CHECKING:
    from stepedit_core.judges.spec import JudgeSpec


def make_scorer(
    name: str,
    dnsmos: bool = False,
    judge: JudgeSpec | None = None,
    template: str | None = None,
    cache_root: str | None = None,
) -> MarginScorer:
    """The scorer called `name`. `dnsmos`: the objective scorer also measures DNSMOS for
    denoise (the qc-heavy extra); `judge`, `template`, `cache_root`: the judge scorer's model
    judge, prompt template and verdict cache root (OUT)."""
    # imported when asked for: the objective scorer loads QC, the judge scorer an HTTP client
    from stepedit_core.dataset.judge_scorer import DEFAULT_MARGIN_PROMPT, JudgeScorer
    from stepedit_core.dataset.objective import ObjectiveScorer

    if name == "objective":
        return ObjectiveScorer(dnsmos=dnsmos)
    if name == "judge":
        if judge is None:
            raise ScorerUnavailable("the judge scorer needs --judge gemini|openai and --model")
        return JudgeScorer(judge, cache_root, template or DEFAULT_MARGIN_PROMPT)
    raise ScorerUnavailable(f"unknown margin scorer {name!r}; available: {', '.join(SCORERS)}")


def scorer_for(spec: Any) -> MarginScorer:
    """The scorer a MarginSpec names, with its settings."""
    return make_scorer(
        spec.scorer, spec.dnsmos, spec.judge, spec.margin_prompt, cache_root=spec.job.out
    )
