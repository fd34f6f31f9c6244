"""Reading a judge's answer: JSON in fences or in chatter, a bare label, a digit.

Grading never guesses: an answer that holds no label for the task raises `Unparsable` (the
verdict is recorded as `judge_unparsable`), and an answer that names something outside the
task's label set is kept as given and counted as wrong and out of the label set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from stepedit_core.judges.prompts import STYLE_NEUTRAL, TOP_SCORE, labels_for

FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
DIGIT = re.compile(r"(?<![\d.])([1-3])(?![\d.])")


class Unparsable(ValueError):
    """The answer holds no label, score or JSON the task can read."""


@dataclass(frozen=True)
class Grade:
    answer: str  # the label (lower case) or score the judge gave
    score: int | None  # paralinguistic: 1..3
    correct: bool
    out_of_label: bool


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in the text: fenced blocks first, then braces found in chatter."""
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    found = []
    for candidate in candidates:
        stripped = candidate.strip()
        pieces = [stripped] + OBJECT.findall(stripped)
        for piece in pieces:
            try:
                value = json.loads(piece)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def _label_answer(text: str, task: str) -> str:
    for obj in _json_objects(text):
        for key in (task, "label", "answer"):
            if key in obj and obj[key] is not None:
                return str(obj[key]).strip().lower()
        if len(obj) == 1:
            return str(next(iter(obj.values()))).strip().lower()
    bare = text.strip().strip("`'\".").strip().lower()
    if re.fullmatch(r"[a-z]+(?:[_\- ][a-z]+)?", bare):  # one label, not a sentence
        return bare
    raise Unparsable(f"no {task} label in the judge's answer: {text[:200]!r}")


def grade(text: str, task: str, label: str) -> Grade:
    """The verdict an answer gives for a clip whose target is `label`."""
    if task == "paralinguistic":
        for obj in _json_objects(text):
            for value in obj.values():
                if str(value).strip() in ("1", "2", "3"):
                    text = str(value)
                    break
        digits = DIGIT.findall(text)
        if len(set(digits)) != 1:
            raise Unparsable(f"no single 1-3 score in the judge's answer: {text[:200]!r}")
        score = int(digits[0])
        return Grade(str(score), score, score == TOP_SCORE, False)
    answer = _label_answer(text, task)
    answer = answer.replace(" ", "_").replace("-", "_") if answer != "none" else answer
    known = set(labels_for(task)) | (set(STYLE_NEUTRAL) if task == "style" else set())
    return Grade(answer, None, answer == label.strip().lower(), answer not in known)
