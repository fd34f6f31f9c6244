"""JobSpec: every parameter of one run, validated once, recorded in run.json.

The command line calls rounds "iterations" (`--iterations`); it is the same concept.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stepedit_core.access import redact
from stepedit_core.delivery import QcPlan
from stepedit_core.edits import EditSpec, parse_edit
from stepedit_core.engines import DEFAULT_ENGINE, ENGINES, EngineOptions
from stepedit_core.judges.spec import JudgeSpec
from stepedit_core.segments import DEFAULT_SEGMENT_S
from stepedit_core.sources import DEFAULT_MAX_MB, DEFAULT_READ_TIMEOUT_S, InputLimits
from stepedit_core.stage_envs import StageEnv, stage_envs
from stepedit_core.words.timing_stage import word_timing_mode

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_ITERATIONS = 5

# An edit inside the job is an EditSpec; it is a string only when the job is serialised
# (run.json, Prefect parameters) and is parsed (and checked) when a job is built from one.
Edit = Annotated[EditSpec, BeforeValidator(parse_edit), PlainSerializer(str, return_type=str)]
# fsspec storage options hold credentials: a serialised job (run.json, Prefect parameters)
# keeps their names and never their values.
StorageOptions = Annotated[dict[str, Any] | None, PlainSerializer(redact)]


class JobSpec(BaseModel):
    manifest_uri: str
    out: str
    run_id: str
    edits: tuple[Edit, ...] = ()  # the job's edit chain; a row's `edit` cell overrides it
    iterations: int = Field(1, ge=1, le=MAX_ITERATIONS)  # rounds; round k edits round k-1's output
    engine: str = DEFAULT_ENGINE
    executor: Literal["ray", "local"] = "ray"
    shard_size: int = Field(2000, ge=1, le=1_000_000)
    prompt_mode: Literal["chain", "fixed"] = "chain"
    seed: int = 0
    models_dir: str | None = None
    stepaudio_src: str | None = None
    llm_backend: Literal["transformers", "vllm"] = "transformers"
    vad_max_pause: float = Field(0.3, ge=0.05, le=5)
    # a local faster-whisper folder: word timings, transcripts for rows without text, `wer` QC
    asr_models: str | None = None
    qc_max_wer: float | None = Field(None, ge=0.0, le=10.0)  # needs asr_models
    # the model engine edits a clip longer than this in segments cut in pauses; at most the
    # model's 30 s window
    segment_seconds: float = Field(DEFAULT_SEGMENT_S, ge=2.0, le=30.0)
    # the words of every round's output in its record: "auto" (forced alignment of the text,
    # else the ASR) or "asr" (the ASR's own word times); on by itself ("auto") with asr_models
    # or the fillers edit in `edits`
    word_timings: Literal["auto", "asr"] | None = None
    gpus: dict[str, float] = Field(default_factory=dict)
    batch_sizes: dict[str, int] = Field(default_factory=dict)
    ray_address: str | None = None
    overwrite: bool = False  # start the run id afresh instead of resuming it
    qc: Literal["acx", "r128", "netflix", "none"] = "none"  # delivery profile checked per round
    qc_heavy: bool = False  # also DNSMOS and speaker similarity (the qc-heavy extra)
    select: Literal["last", "best"] = "last"  # the round delivered
    # the delivered files' format; MP3 is constant bitrate, `mp3_bitrate` kbps (encoding.py)
    deliver_format: Literal["flac", "wav", "mp3"] = "flac"
    mp3_bitrate: Literal[128, 160, 192, 224, 256, 320] = 192
    # the review page RUN/report/: players for every clip, for index.html's clips, or no page
    report: Literal["all", "index", "none"] = "index"
    # edit only rows no earlier run under `out` finished with the same audio, edit, engine
    # version and seed; the others point at the earlier output (incremental.py)
    incremental: bool = False
    # stage name -> interpreter / container image its Ray workers run in (stage_envs.py)
    stage_python: dict[str, str] = Field(default_factory=dict)
    stage_images: dict[str, str] = Field(default_factory=dict)

    def fingerprint(self) -> dict[str, object]:
        """What decides a run's outputs: a resumed attempt must match the first one."""
        keep = ("manifest_uri", "edits", "iterations", "engine", "shard_size", "prompt_mode",
                "seed", "models_dir", "llm_backend", "vad_max_pause", "qc", "qc_heavy",
                "select", "incremental", "deliver_format", "mp3_bitrate")  # fmt: skip
        dumped = self.model_dump(mode="json")
        found = {k: dumped[k] for k in keep}
        # optional settings join only when set: runs without them keep the fingerprint they had
        if self.asr_models is not None:
            found.update({k: dumped[k] for k in ("asr_models", "qc_max_wer")})
        if self.segment_seconds != DEFAULT_SEGMENT_S:
            found["segment_seconds"] = self.segment_seconds
        if self.word_timings is not None:
            found["word_timings"] = self.word_timings
        if self.judge is not None:
            found["judge"] = dumped["judge"]
            found["until_judged"] = self.until_judged
        return found

    # judge each round as it is made (stepedit_core/judges); with until_judged a clip stops
    # after the first round the judge confirms
    judge: JudgeSpec | None = None
    until_judged: bool = False

    allow_roots: list[str] = Field(default_factory=list)  # empty: the manifest's folder
    # bounds on reading one source (sources.py): size in MB, and seconds per object
    max_input_mb: int = Field(DEFAULT_MAX_MB, ge=1, le=1 << 20)
    read_timeout_s: float = Field(DEFAULT_READ_TIMEOUT_S, gt=0, le=86400)
    storage_options: StorageOptions = Field(None, repr=False)

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str) -> str:
        if not RUN_ID.match(value):
            raise ValueError(
                f"run id {value!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
            )
        return value

    @field_validator("qc_max_wer")
    @classmethod
    def _max_wer_needs_asr(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("asr_models") is None:
            raise ValueError("--qc-max-wer needs --asr-models (the ASR model measures the WER)")
        return value

    @model_validator(mode="after")
    def _asr_word_timings_need_asr(self) -> JobSpec:
        if self.word_timings == "asr" and self.asr_models is None:
            raise ValueError(
                "--word-timings asr needs --asr-models (the ASR model times the words)"
            )
        return self

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in ENGINES:
            raise ValueError(f"unknown engine {value!r}; available engines: {', '.join(ENGINES)}")
        return value

    @model_validator(mode="after")
    def _delivery(self) -> JobSpec:
        self.qc_plan()  # ValueError: a format the profile does not take (ACX: MP3 >= 192 kbps)
        return self

    @model_validator(mode="after")
    def _stage_envs(self) -> JobSpec:
        if self.stage_envs() and self.executor != "ray":
            raise ValueError(
                "a stage environment (--stage-python/--stage-image) needs --executor ray"
            )
        return self

    @model_validator(mode="after")
    def _until_judged(self) -> JobSpec:
        if self.until_judged and self.judge is None:
            raise ValueError("--until-judged needs --judge")
        return self

    def stage_envs(self) -> dict[str, StageEnv]:
        return stage_envs(self.stage_python, self.stage_images)  # StageEnvError: a ValueError

    def storage_uris(self) -> list[str]:
        """Every location the job reads or writes: storage options apply to their protocols."""
        return [self.manifest_uri, self.out, *self.allow_roots]

    def input_limits(self) -> InputLimits:
        return InputLimits.of(self.max_input_mb, self.read_timeout_s)

    def qc_plan(self) -> QcPlan:
        return QcPlan(
            profile=self.qc,
            heavy=self.qc_heavy,
            select=self.select,
            asr_models=self.asr_models,
            max_wer=self.qc_max_wer,
            deliver_format=self.deliver_format,
            mp3_bitrate=self.mp3_bitrate,
        )

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            models_dir=self.models_dir,
            stepaudio_src=self.stepaudio_src,
            prompt_mode=self.prompt_mode,
            llm_backend=self.llm_backend,
            vad_max_pause=self.vad_max_pause,
            asr_models=self.asr_models,
            segment_seconds=self.segment_seconds,
            word_timings=word_timing_mode(self.word_timings, self.asr_models, self.edits),
            gpus=dict(self.gpus),
            batch_sizes=dict(self.batch_sizes),
        )
