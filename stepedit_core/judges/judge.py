"""Judging one round: a `JudgeTask` (the audio and what it should be) in, a sealed `Verdict` out.

`Judge` is the picklable configuration a stage carries to its workers: which API, model and
prompts, where the verdict cache is, how many requests may be in flight. `judge_many` runs
tasks on a thread pool of that size (HTTP waits, it does not compute), so one CPU actor keeps
`concurrency` requests in flight.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import soundfile as sf

from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.judges.answers import Unparsable, grade
from stepedit_core.judges.cache import VerdictCache, cache_key
from stepedit_core.judges.http import (
    HttpPolicy,
    JudgeClient,
    JudgeRequestFailed,
    MissingKey,
    read_key,
)
from stepedit_core.judges.objective import OBJECTIVE_EDITS, judge_edit
from stepedit_core.judges.prompts import Prompts, prompt_sha256
from stepedit_core.judges.verdict import RAW_ANSWER_CHARS, Verdict

JUDGES = ("gemini", "openai", "objective")
OBJECTIVE_MODEL = "stepedit-objective-v1"


@dataclass
class JudgeTask:
    """One round of one clip to judge. `audio` is the round's audio file bytes (FLAC for
    rounds, the source file for iteration 0); `before` the round's input (objective judges)."""

    clip_id: str
    row_index: int
    round: int
    task: str
    label: str
    audio: bytes
    audio_sha256: str
    judged_record_sha256: str
    language: str | None = None
    text: str | None = None
    target_text: str | None = None
    edit: EditSpec | None = None  # objective: the signal edit judged
    before: bytes | None = None
    verdict: Verdict | None = None  # set once judged

    failed = False  # a stage's `select` passes only items that have not failed


@dataclass
class Judge:
    kind: str  # gemini, openai, objective
    model: str = OBJECTIVE_MODEL
    endpoint: str = ""
    key_env: str | None = None
    cache_root: str | None = None  # OUT: the verdict cache lives in OUT/_judge_cache
    concurrency: int = 8
    prompts: Prompts = field(default_factory=Prompts)
    policy: HttpPolicy = field(default_factory=HttpPolicy)
    # the API key, read from `key_env` where the run starts: workers on other machines do not
    # share its environment. It travels in memory with the stage, never into a file or record.
    key: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in JUDGES:
            raise ValueError(f"unknown judge {self.kind!r}; expected one of {', '.join(JUDGES)}")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")

    def client(self) -> JudgeClient:
        return JudgeClient(
            self.kind, self.endpoint, self.model, self.key_env, self.policy, key=self.key
        )

    def with_key(self) -> Judge:
        """This judge holding its key (MissingKey when the variable is not set)."""
        if self.kind != "objective":
            self.key = read_key(self.key_env)
        return self

    def judge(self, task: JudgeTask, client: JudgeClient | None = None) -> Verdict:
        if self.kind == "objective":
            return self._objective(task)
        prompt = self.prompts.render(task.task, task.text, task.target_text)
        verdict = self._verdict(task, prompt_sha256(prompt))
        cache = VerdictCache(self.cache_root) if self.cache_root else None
        key = cache_key(task.audio_sha256, verdict.prompt_sha256 or "", self.model)
        answer = cache.get(key) if cache else None
        verdict.cached = answer is not None
        if answer is None:
            try:
                answer = (client or self.client()).ask(
                    prompt, wav16(task.audio), json_answer=task.task != "paralinguistic"
                )
            except (JudgeRequestFailed, MissingKey) as exc:
                return verdict.fail("judge_failed", f"row {task.row_index}: {exc}").seal(
                    task.judged_record_sha256
                )
        verdict.raw_answer = answer[:RAW_ANSWER_CHARS]
        try:
            graded = grade(answer, task.task, task.label)
        except Unparsable as exc:
            return verdict.fail("judge_unparsable", f"row {task.row_index}: {exc}").seal(
                task.judged_record_sha256
            )
        if cache is not None and not verdict.cached:
            cache.put(key, answer)  # only answers that graded: a garbled one is asked again
        verdict.answer, verdict.score = graded.answer, graded.score
        verdict.correct, verdict.out_of_label = graded.correct, graded.out_of_label
        return verdict.seal(task.judged_record_sha256)

    def _verdict(self, task: JudgeTask, prompt_sha: str | None) -> Verdict:
        return Verdict(
            clip_id=task.clip_id,
            row_index=task.row_index,
            round=task.round,
            task=task.task,
            label=task.label,
            language=task.language,
            judge=self.kind,
            model=self.model,
            prompt_sha256=prompt_sha,
            audio_sha256=task.audio_sha256,
        )

    def _objective(self, task: JudgeTask) -> Verdict:
        verdict = self._verdict(task, None)
        if task.edit is None or task.edit.type not in OBJECTIVE_EDITS or task.before is None:
            return verdict.fail(
                "judge_failed", f"row {task.row_index}: no objective judge for {task.task}"
            ).seal(task.judged_record_sha256)
        before, after = audio_io.decode(task.before), audio_io.decode(task.audio)
        landed, measured = judge_edit(task.edit, before, after)
        verdict.answer = measured
        verdict.correct, verdict.out_of_label = landed, False
        return verdict.seal(task.judged_record_sha256)

    def judge_many(self, tasks: list[JudgeTask]) -> list[Verdict]:
        """Verdicts in the tasks' order, `concurrency` requests at a time."""
        if not tasks:
            return []
        if self.kind == "objective" or self.concurrency == 1 or len(tasks) == 1:
            client = None if self.kind == "objective" else self.client()
            return [self.judge(t, client) for t in tasks]
        client = self.client()
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(tasks))) as pool:
            return list(pool.map(lambda t: self.judge(t, client), tasks))


def wav16(data: bytes) -> bytes:
    """The audio as a mono 16-bit PCM WAV, the format both judge APIs read."""
    return audio_wav16(audio_io.decode(data))


def audio_wav16(decoded: audio_io.Audio) -> bytes:
    """Decoded audio as a mono 16-bit PCM WAV."""
    audio = audio_io.to_mono(decoded)
    sink = io.BytesIO()
    sf.write(sink, audio.samples, audio.sample_rate, format="WAV", subtype="PCM_16")
    return sink.getvalue()
