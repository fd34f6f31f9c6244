"""JobSpec: every parameter of one run, validated once, recorded in run.json."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from stepedit_core.edits import EditSpec, parse_edit
from stepedit_core.engines import ENGINES, EngineOptions
from stepedit_core.stage_envs import StageEnv, stage_envs

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_ITERATIONS = 5


class JobSpec(BaseModel):
    manifest_uri: str
    out: str
    run_id: str
    edits: list[str] = Field(default_factory=list)  # the job's edit chain; rows may override
    iterations: int = Field(1, ge=1, le=MAX_ITERATIONS)
    engine: str = "signal"
    executor: Literal["ray", "local"] = "ray"
    shard_size: int = Field(2000, ge=1, le=1_000_000)
    prompt_mode: Literal["chain", "fixed"] = "chain"
    seed: int = 0
    models_dir: str | None = None
    stepaudio_src: str | None = None
    llm_backend: Literal["transformers", "vllm"] = "transformers"
    vad_max_pause: float = Field(0.3, ge=0.05, le=5)
    gpus: dict[str, float] = Field(default_factory=dict)
    batch_sizes: dict[str, int] = Field(default_factory=dict)
    ray_address: str | None = None
    # stage name -> interpreter / container image its Ray workers run in (stage_envs.py)
    stage_python: dict[str, str] = Field(default_factory=dict)
    stage_images: dict[str, str] = Field(default_factory=dict)

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str) -> str:
        if not RUN_ID.match(value):
            raise ValueError(
                f"run id {value!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
            )
        return value

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"unknown engine {value!r}; available engines: {', '.join(ENGINES)}")
        return value

    @field_validator("edits")
    @classmethod
    def _edits(cls, value: list[str]) -> list[str]:
        return [str(parse_edit(v)) for v in value]  # raises EditError (a ValueError) when bad

    @model_validator(mode="after")
    def _stage_envs(self) -> JobSpec:
        if self.stage_envs() and self.executor != "ray":
            raise ValueError(
                "a stage environment (--stage-python/--stage-image) needs --executor ray"
            )
        return self

    def stage_envs(self) -> dict[str, StageEnv]:
        return stage_envs(self.stage_python, self.stage_images)  # StageEnvError: a ValueError

    @property
    def edit_chain(self) -> tuple[EditSpec, ...]:
        return tuple(parse_edit(v) for v in self.edits)

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            models_dir=self.models_dir,
            stepaudio_src=self.stepaudio_src,
            prompt_mode=self.prompt_mode,
            llm_backend=self.llm_backend,
            vad_max_pause=self.vad_max_pause,
            gpus=dict(self.gpus),
            batch_sizes=dict(self.batch_sizes),
        )
