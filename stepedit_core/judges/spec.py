"""The judge of a job, as recorded in run.json (the key's variable name, never the key). Each
field declares its command-line option (`--judge`, `--endpoint`, `--model`, `--key-env`,
`--prompts`, `--concurrency`); `stepedit run`, `judge`, `eval run` and `dataset margin` offer
them from these declarations (flows/judge_cli.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from stepedit_core.foundation.settings import Setting
from stepedit_core.judges.judge import OBJECTIVE_MODEL, Judge
from stepedit_core.judges.prompts import Prompts


class JudgeSpec(BaseModel):
    """Who judges each round, with what model, prompts and concurrency."""

    # The whole spec joins the fingerprint as the job's `judge` setting; these declarations
    # only offer the fields on the command line, so each says what it changes all the same.
    kind: Annotated[
        Literal["gemini", "openai", "objective"],
        Setting(
            "who judges each round: a Gemini or OpenAI-compatible audio model (rows with "
            "eval_task and eval_label), or objective measurements of the signal edits",
            changes_output=True,
            flag="--judge",
        ),
    ]
    endpoint: Annotated[
        str,
        Setting(
            "the judge API's base URL (gemini default: Google's; openai: a URL ending in /v1)",
            changes_output=True,
            flag="--endpoint",
            metavar="URL",
        ),
    ] = ""
    model: Annotated[
        str,
        Setting(
            "the judge model's name (default: none; the objective judge needs none)",
            changes_output=True,
            flag="--model",
        ),
    ] = OBJECTIVE_MODEL
    key_env: Annotated[
        str | None,
        Setting(
            "environment variable holding the API key (sent in a header, never recorded)",
            changes_output=False,
            flag="--key-env",
            metavar="VAR",
        ),
    ] = None
    # the templates themselves (read from --prompts FILE when the job is made), so workers and
    # a resumed attempt judge with the same prompts whatever happens to the file
    prompts: Annotated[
        dict[str, str],
        Setting(
            "JSON file: task -> prompt template (default: the built-in templates)",
            changes_output=True,
            flag="--prompts",
            metavar="FILE",
        ),
    ] = Field(default_factory=lambda: dict(Prompts().templates))
    concurrency: Annotated[
        int,
        Setting("judge requests in flight", changes_output=False, flag="--concurrency"),
    ] = Field(8, ge=1, le=256)

    @model_validator(mode="after")
    def _needs(self) -> JudgeSpec:
        if self.kind != "objective" and self.model == OBJECTIVE_MODEL:
            raise ValueError(f"the {self.kind} judge needs --model (the judge model's name)")
        if self.kind == "openai" and not self.endpoint:
            raise ValueError("the openai judge needs --endpoint (a base URL ending in /v1)")
        return self

    def judge(self, cache_root: str | None) -> Judge:
        return Judge(
            kind=self.kind,
            model=self.model,
            endpoint=self.endpoint,
            key_env=self.key_env,
            cache_root=cache_root,
            concurrency=self.concurrency,
            prompts=Prompts(dict(self.prompts)),
        ).with_key()
