"""The judge options of a job (`--judge`, `--endpoint`, `--model`, `--key-env`, `--prompts`,
`--concurrency`), as recorded in run.json: the key's variable name, never the key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from stepedit_core.judges.judge import OBJECTIVE_MODEL, Judge
from stepedit_core.judges.prompts import Prompts


class JudgeSpec(BaseModel):
    kind: Literal["gemini", "openai", "objective"]
    endpoint: str = ""
    model: str = OBJECTIVE_MODEL
    key_env: str | None = None
    # the templates themselves (read from --prompts FILE when the job is made), so workers and
    # a resumed attempt judge with the same prompts whatever happens to the file
    prompts: dict[str, str] = Field(default_factory=lambda: dict(Prompts().templates))
    concurrency: int = Field(8, ge=1, le=256)

    @model_validator(mode="after")
    def _needs(self) -> JudgeSpec:
        if self.kind != "objective" and self.model == OBJECTIVE_MODEL:
            raise ValueError(f"the {self.kind} judge needs --model (the judge model's name)")
        if self.kind == "openai" and not self.endpoint:
            raise ValueError("the openai judge needs --endpoint (a base URL ending in /v1)")
        return self

    @classmethod
    def from_options(
        cls,
        kind: str,
        endpoint: str | None,
        model: str | None,
        key_env: str | None,
        prompts_file: str | None,
        concurrency: int,
    ) -> JudgeSpec:
        return cls(
            kind=kind,
            endpoint=endpoint or "",
            model=model or OBJECTIVE_MODEL,
            key_env=key_env,
            prompts=Prompts.load(prompts_file).templates,
            concurrency=concurrency,
        )

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
