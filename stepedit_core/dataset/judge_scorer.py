"""The judge margin: an audio model asked how clearly an attribute differs between two versions.

The judge hears the neutral version, then the edited one (two audio parts of one request, on
the same HTTP clients as the judges: timeouts, retries, the key in a header) and answers a
margin 1-10 as `{"margin": N}`. The prompt is a template with `{attribute}` (the edit, e.g.
`emotion=happy`) and `{what}` (what that edit changes, in words); `--margin-prompt FILE`
replaces it. `--concurrency` pairs are asked at once. Answers are cached with the verdicts
(`OUT/_judge_cache/`), by both recordings' sha256, the prompt's sha256 and the judge model:
scoring the same pair again asks nothing. An unanswered or unreadable request leaves the pair
without a margin (never kept), and says why.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from stepedit_core.dataset.scorers import MARGIN_MAX, MARGIN_MIN, Margin, Pair, ScorerUnavailable
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.judges.cache import VerdictCache, cache_key
from stepedit_core.judges.http import JudgeClient, JudgeRequestFailed, MissingKey
from stepedit_core.judges.judge import audio_wav16
from stepedit_core.judges.prompts import prompt_sha256
from stepedit_core.judges.spec import JudgeSpec

BASIS = "judge_margin"
DEFAULT_MARGIN_PROMPT = (
    "You will hear two recordings of the same line in the same voice: first the neutral "
    "version, then a version edited for {attribute}. How clearly does the second recording "
    "differ from the first in {what}? Judge only that, not the audio quality or the words. "
    "Answer on a scale from 1 (no audible difference) to 10 (an unmistakable difference), "
    'with JSON only, in the form {{"margin": <1-10>}}.'
)
# what an edit changes, for the prompt's {what}
WHAT = {
    "emotion": "the emotion the voice expresses",
    "style": "speaking style",
    "speed": "speaking speed",
    "paralinguistic": "non-verbal sounds (breaths, laughter, sighs, interjections)",
    "denoise": "background noise",
    "vad": "pauses and silences",
    "loudness": "loudness",
}
NUMBER = re.compile(r"(?<![\d.])(10|[1-9])(?![\d.])")


class MarginPromptError(ValueError):
    """A margin prompt template that can not be used."""


def load_margin_prompt(path: str | None) -> str:
    """The template from `--margin-prompt FILE` (checked for its placeholders), or the
    default."""
    if path is None:
        return DEFAULT_MARGIN_PROMPT
    try:
        template = Path(path).read_text()
    except OSError as exc:
        raise MarginPromptError(f"--margin-prompt {path}: {exc}") from None
    try:
        template.format(attribute="emotion=happy", what="emotion")
    except (KeyError, IndexError, ValueError) as exc:
        raise MarginPromptError(
            f"--margin-prompt {path}: bad placeholder {exc}; use {{attribute}} and {{what}} "
            "(double other braces: {{ }})"
        ) from None
    if not template.strip():
        raise MarginPromptError(f"--margin-prompt {path}: the file is empty")
    return template


def read_margin(answer: str) -> int:
    """The 1-10 margin in a judge's answer (JSON `margin`, or one lone number)."""
    for match in re.finditer(r"\{[^{}]*\}", answer):
        try:
            value = json.loads(match.group(0)).get("margin")
        except (ValueError, AttributeError):
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and float(value).is_integer() and MARGIN_MIN <= value <= MARGIN_MAX:
            return int(value)
    numbers = set(NUMBER.findall(answer))
    if len(numbers) == 1:
        return int(numbers.pop())
    raise ValueError(f"no 1-10 margin in the judge's answer: {answer[:200]!r}")


@dataclass
class JudgeScorer:
    spec: JudgeSpec
    cache_root: str | None = None  # OUT: shares OUT/_judge_cache with the verdicts
    template: str = DEFAULT_MARGIN_PROMPT
    name: str = "judge"
    _client: JudgeClient | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.spec.kind not in ("gemini", "openai"):
            raise ScorerUnavailable("margin judges are gemini or openai (an audio model)")
        try:
            judge = self.spec.judge(self.cache_root)  # reads the key now: refused before work
        except MissingKey as exc:
            raise ScorerUnavailable(str(exc)) from None
        self._client = judge.client()

    @property
    def concurrency(self) -> int:
        """Pairs scored at once (requests in flight): the judge's --concurrency."""
        return self.spec.concurrency

    def refusal(self, attribute: EditSpec) -> str | None:
        return None  # a listener can be asked about any attribute

    def prompt(self, attribute: EditSpec) -> str:
        what = WHAT.get(attribute.type, attribute.type)
        return self.template.format(attribute=str(attribute), what=what)

    def score(self, pair: Pair) -> Margin:
        prompt = self.prompt(pair.attribute)
        neutral, edited = audio_wav16(pair.neutral), audio_wav16(pair.edited)
        shas = ":".join(hashlib.sha256(w).hexdigest() for w in (neutral, edited))
        key = cache_key(shas, prompt_sha256(prompt), self.spec.model)
        cache = VerdictCache(self.cache_root) if self.cache_root else None
        answer = cache.get(key) if cache else None
        cached = answer is not None
        measures: dict[str, float | None] = {}
        if answer is None:
            if self._client is None:
                return Margin(None, BASIS, note="judge_failed: the judge has no client")
            try:
                answer = self._client.ask(prompt, neutral, json_answer=True, more=(edited,))
            except (JudgeRequestFailed, MissingKey) as exc:
                return Margin(None, BASIS, note=f"judge_failed: {exc}")
        try:
            value = read_margin(answer)
        except ValueError as exc:
            return Margin(None, BASIS, note=f"judge_unparsable: {exc}")
        if cache is not None and not cached:
            cache.put(key, answer)  # only answers that read: a garbled one is asked again
        measures["judge_cached"] = 1.0 if cached else 0.0
        return Margin(value, BASIS, float(value), measures)

    def describe(self) -> str:
        return (
            f"A `{self.spec.kind}` judge (model `{self.spec.model}`) heard each pair, the "
            "neutral version first, and answered how clearly the attribute differs, 1-10; "
            f"`margin` is its answer. Prompt (sha256 of the template "
            f"`{prompt_sha256(self.template)}`; `{{attribute}}` is the edit, `{{what}}` what "
            f"it changes):\n\n```text\n{self.template}\n```"
        )
