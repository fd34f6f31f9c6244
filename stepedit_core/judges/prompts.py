"""What a judge is asked: one prompt per evaluation task, and the labels each task accepts.

The defaults follow the Step-Audio-Edit-Benchmark's protocol (written here in our own words):
emotion is a forced choice over six labels answered as `{"emotion": ...}`, style a rubric with
`normal` for delivery that does not convince, answered as `{"style": ...}`, and paralinguistic
a checklist built from where each tag sits in the text, scored 1 (all missing or misplaced),
2 (some flaw) or 3 (every sound present and placed right), answered as one digit.

`--prompts FILE` (JSON: task -> template) replaces any of them. A template may use `{labels}`
(the task's labels, comma-joined), `{text}` (the clip's text) and, for paralinguistic,
`{checklist}`. Each verdict records the sha256 of the exact prompt sent.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from stepedit_core.foundation.edits import PARALINGUISTIC_TAGS

TASKS = ("emotion", "style", "paralinguistic")
# the label a task's judge may answer; `natural`/`normal`/`none` are valid answers that never
# match a target label, anything else is out of the label set (counted as wrong, and counted)
EMOTION_LABELS = ("natural", "happy", "sad", "angry", "fear", "surprised")
STYLE_LABELS = ("child", "exaggerated", "recite", "generous", "act_coy", "older", "whisper")
STYLE_NEUTRAL = ("normal", "none")
PARALINGUISTIC_SCORES = ("1", "2", "3")
TOP_SCORE = 3
CONTEXT_CHARS = 5  # characters before a tag that anchor it in the checklist

# what a listener should hear for each tag of the model's vocabulary
TAG_SOUNDS = {
    "[Breathing]": "an audible breath",
    "[Laughter]": "laughter",
    "[Surprise-oh]": 'a surprised "oh"',
    "[Confirmation-en]": 'an agreeing "en" / "mm-hm"',
    "[Uhm]": 'a hesitant "uhm"',
    "[Surprise-ah]": 'a surprised "ah"',
    "[Surprise-wa]": 'an amazed "wa"',
    "[Sigh]": "a sigh",
    "[Question-ei]": 'a questioning "ei?"',
    "[Dissatisfaction-hnn]": 'a displeased "hnn"',
}
assert set(TAG_SOUNDS) == set(PARALINGUISTIC_TAGS)

DEFAULT_TEMPLATES = {
    "emotion": (
        "You are rating the emotion a speaker expresses through the voice alone. Listen to "
        "the audio and decide which one emotion it conveys, judging only tone, pitch, energy "
        "and rhythm; the meaning of the words must not influence you. Choose exactly one of: "
        '{labels}. Answer with JSON only, in the form {{"emotion": "<label>"}}.'
    ),
    "style": (
        "You are rating the speaking style of the audio. Styles: child (a child's voice and "
        "manner), exaggerated (theatrical, overdone), recite (formal reading or recitation), "
        "generous (warm, broad-minded, magnanimous), act_coy (cute, coquettish), older (an "
        "elderly voice), whisper (whispered, little voicing). Judge the delivery, not the "
        "words. If no style is clearly and convincingly present, answer normal. Choose exactly "
        "one of: {labels}, normal. Answer with JSON only, in the form "
        '{{"style": "<label>"}}.'
    ),
    "paralinguistic": (
        "The speaker should say: {text}\n"
        "Check that these non-verbal sounds are present at these places:\n{checklist}\n"
        "Score 3 if every sound is present at its place and natural, 2 if any sound is weak, "
        "unnatural or slightly misplaced, 1 if the sounds are missing or in the wrong places. "
        "Answer with the single digit only."
    ),
}
TAG_PATTERN = re.compile(r"\[[^\[\]]+\]")


class PromptError(ValueError):
    """A prompts file that can not be used (the message names the file and the task)."""


@dataclass(frozen=True)
class Prompts:
    templates: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))

    @classmethod
    def load(cls, path: str | None) -> Prompts:
        """The defaults, with the tasks a JSON file names replaced."""
        if path is None:
            return cls()
        try:
            given = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise PromptError(f"prompts file {path}: {exc}") from None
        if not isinstance(given, dict):
            raise PromptError(f"prompts file {path}: expected a JSON object task -> template")
        templates = dict(DEFAULT_TEMPLATES)
        for task, template in given.items():
            if task not in TASKS or not isinstance(template, str) or not template.strip():
                raise PromptError(
                    f"prompts file {path}: key {task!r} must be one of {', '.join(TASKS)} "
                    "with a non-empty template string"
                )
            templates[task] = template
        return cls(templates)

    def render(self, task: str, text: str | None = None, target_text: str | None = None) -> str:
        """The exact prompt for one clip (`target_text`: the tagged text, paralinguistic)."""
        template = self.templates[task]
        tagged = target_text or text or ""
        values = {
            "labels": ", ".join(labels_for(task)),
            "text": tagged,
            "checklist": checklist(tagged) if task == "paralinguistic" else "",
        }
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError) as exc:
            raise PromptError(f"prompt template for {task}: bad placeholder {exc}") from None


def labels_for(task: str) -> tuple[str, ...]:
    if task == "emotion":
        return EMOTION_LABELS
    if task == "style":
        return STYLE_LABELS
    return PARALINGUISTIC_SCORES


def checklist(tagged_text: str) -> str:
    """One line per tag: the few characters spoken before it (tags removed), then the sound."""
    lines = []
    for match in TAG_PATTERN.finditer(tagged_text):
        tag = match.group(0)
        before = TAG_PATTERN.sub("", tagged_text[: match.start()]).strip()
        anchor = before[-CONTEXT_CHARS:]
        sound = TAG_SOUNDS.get(tag, f"the sound {tag}")
        where = f"right after '{anchor}'" if anchor else "at the very start"
        lines.append(f"- {where}: {sound}")
    return "\n".join(lines) or "- (no tags in the text)"


def prompt_sha256(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()
