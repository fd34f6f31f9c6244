"""JobSpec: every parameter of one run, validated once, recorded in run.json.

The settings are declared in groups (below, and one group per engine beside the engine, e.g.
engines/signal/config.py); each says its flag, help and whether it changes the output
(stepedit_core/foundation/settings.py). The run's code reads a setting by its name (`job.qc`), and
run.json
and deployments hold the settings by name, flat, as they always did.

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
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from stepedit_core.catalog.access import redact
from stepedit_core.engines import DEFAULT_ENGINE, ENGINES, Engine, EngineOptions, make_engine
from stepedit_core.engines.signal.config import SignalConfig
from stepedit_core.engines.stepaudio.config import StepAudioConfig
from stepedit_core.foundation.edits import EditSpec, parse_edit
from stepedit_core.foundation.settings import (
    Setting,
    SettingsGroup,
    declared,
    nest,
    output_settings,
)
from stepedit_core.foundation.sources import (
    DECODED_FACTOR,
    DEFAULT_MAX_MB,
    DEFAULT_READ_TIMEOUT_S,
    InputLimits,
)
from stepedit_core.judges.spec import JudgeSpec
from stepedit_core.lifecycle.stage_envs import StageEnv, stage_envs
from stepedit_core.quality.config import QualityConfig
from stepedit_core.quality.delivery import QcPlan
from stepedit_core.words.timing_stage import word_timing_mode

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_ITERATIONS = 5

# An edit inside the job is an EditSpec; it is a string only when the job is serialised
# (run.json, Prefect parameters) and is parsed (and checked) when a job is built from one.
Edit = Annotated[
    EditSpec,
    BeforeValidator(parse_edit, json_schema_input_type=str),
    PlainSerializer(str, return_type=str),
]
# fsspec storage options hold credentials: a serialised job (run.json, Prefect parameters)
# keeps their names and never their values.
StorageOptions = Annotated[dict[str, Any] | None, PlainSerializer(redact)]


class RoundsConfig(SettingsGroup):
    """Rounds"""

    iterations: Annotated[
        int,
        Field(ge=1, le=MAX_ITERATIONS),
        Setting(
            f"editing rounds, 1..{MAX_ITERATIONS}; round k edits round k-1's output "
            "(the outputs call a round an iteration)",
            changes_output=True,
            flag="--iterations",
            metavar="N",
            fingerprint="always",
        ),
    ] = 1
    seed: Annotated[
        int,
        # a row's seed is part of its own incremental key (incremental.finished_key)
        Setting(
            "base seed; each clip derives its own",
            changes_output=True,
            flag="--seed",
            metavar="N",
            fingerprint="always",
            key="never",
        ),
    ] = 0


class WordsConfig(SettingsGroup):
    """Words and transcripts"""

    # the ASR decides transcripts of rows without text, word timings and the `wer` verdict
    asr_models: Annotated[
        str | None,
        Setting(
            "local faster-whisper (CTranslate2) model folder: word timings for the fillers "
            "edit, transcripts for rows without text, and the `wer` QC metric (pip install "
            "'stepedit[asr]')",
            changes_output=True,
            flag="--asr-models",
            metavar="DIR",
        ),
    ] = None
    # "auto" (forced alignment of the text, else the ASR) or "asr" (the ASR's own word times);
    # on by itself ("auto") with asr_models or the fillers edit in `edits`
    word_timings: Annotated[
        Literal["auto", "asr"] | None,
        Setting(
            "record the words of every round's output (words_json): auto (the default when "
            "given) aligns the text, or uses --asr-models where a row has none; asr: the ASR's "
            "own word times. On by itself with --asr-models or --edit fillers",
            changes_output=True,
            flag="--word-timings",
            const="auto",
        ),
    ] = None


class ExecutionConfig(SettingsGroup):
    """Execution"""

    executor: Annotated[
        Literal["ray", "local"],
        Setting(
            "where stages run: Ray actor pools, or this process",
            changes_output=False,
            flag="--executor",
        ),
    ] = "ray"
    # a started run's shards are laid out by it: a resumed attempt must keep it
    shard_size: Annotated[
        int,
        Field(ge=1, le=1_000_000),
        Setting(
            "clips per Prefect task",
            changes_output=False,
            flag="--shard-size",
            metavar="N",
            fingerprint="always",
        ),
    ] = 2000
    ray_address: Annotated[
        str | None,
        Setting(
            "Ray cluster to join (default: $RAY_ADDRESS, else the shared local one)",
            changes_output=False,
            flag="--ray-address",
            metavar="ADDRESS",
        ),
    ] = None
    gpus: Annotated[
        dict[str, float],
        Setting(
            "GPU fraction per actor of a stage",
            changes_output=False,
            flag="--gpu",
            metavar="STAGE=FRACTION",
        ),
    ] = Field(default_factory=dict)
    batch_sizes: Annotated[
        dict[str, int],
        Setting(
            "batch size of a stage", changes_output=False, flag="--batch-size", metavar="STAGE=N"
        ),
    ] = Field(default_factory=dict)
    # stage name -> interpreter / container image its Ray workers run in (stage_envs.py)
    stage_python: Annotated[
        dict[str, str],
        Setting(
            "run a stage's Ray workers with this interpreter (its own environment)",
            changes_output=False,
            flag="--stage-python",
            metavar="STAGE=PYTHON",
        ),
    ] = Field(default_factory=dict)
    stage_images: Annotated[
        dict[str, str],
        Setting(
            "run a stage's Ray workers in this container image",
            changes_output=False,
            flag="--stage-image",
            metavar="STAGE=IMAGE",
        ),
    ] = Field(default_factory=dict)
    overwrite: Annotated[
        bool,
        Setting(
            "start the run id afresh (by default a run id resumes where it stopped, and a "
            "finished one does nothing); removes only what the run wrote, after the job is "
            "checked, and never touches a folder that is not a stepedit run",
            changes_output=False,
            flag="--overwrite",
        ),
    ] = False
    # edit only rows no earlier run under `out` finished with the same audio, edit, engine
    # version and seed; the others point at the earlier output (incremental.py). Which rows
    # a started run edits depends on it, so a resumed attempt must keep it.
    incremental: Annotated[
        bool,
        Setting(
            "edit only rows no earlier run under --out finished with the same audio bytes, "
            "edit, engine version and seed; the output manifest points the others at the "
            "earlier outputs (column reused_from_run). Default: off for `run`, on for `deploy`",
            changes_output=False,
            flag="--incremental",
            fingerprint="always",
            negatable=True,
        ),
    ] = False


class InputsConfig(SettingsGroup):
    """Inputs and limits"""

    # which sources may be read and how big or slow they may be decide which rows fail, not
    # what an edit makes of a row
    allow_roots: Annotated[
        list[str],
        Setting(
            "folder or bucket prefix audio may be read from; repeatable (default: the "
            "manifest's folder). Rows whose audio_uri resolves elsewhere fail as "
            "uri_not_allowed",
            changes_output=False,
            flag="--allow-root",
            metavar="URI",
        ),
    ] = Field(default_factory=list)
    max_input_mb: Annotated[
        int,
        Field(ge=1, le=1 << 20),
        Setting(
            f"largest source file read (default {DEFAULT_MAX_MB}); a larger one, or one whose "
            f"header claims more than {DECODED_FACTOR}x that decoded, fails as file_too_large",
            changes_output=False,
            flag="--max-input-mb",
            metavar="MB",
        ),
    ] = DEFAULT_MAX_MB
    read_timeout_s: Annotated[
        float,
        Field(gt=0, le=86400),
        Setting(
            "longest read of one source file or object (default "
            f"{DEFAULT_READ_TIMEOUT_S:g}); a slower one fails as read_timeout",
            changes_output=False,
            flag="--read-timeout",
            metavar="SECONDS",
        ),
    ] = DEFAULT_READ_TIMEOUT_S
    storage_options: Annotated[
        StorageOptions,
        Setting(
            "fsspec storage options for object storage (e.g. key, secret, "
            "client_kwargs.endpoint_url), used for manifest, audio and outputs; never recorded",
            changes_output=False,
            flag="--storage-options",
            metavar="JSON|@FILE",
        ),
    ] = Field(None, repr=False)


class JudgingConfig(SettingsGroup):
    """Judging"""

    # judge each round as it is made (stepedit_core/judges); the judge's own options
    # (--judge, --endpoint, --model, ...) are declared by its fields (judges/spec.py)
    judge: Annotated[
        JudgeSpec | None,
        Setting("who judges each round", changes_output=True, key="never"),
    ] = None
    # a clip stops after the first round the judge confirms
    until_judged: Annotated[
        bool,
        Setting(
            "stop a clip after the first round the judge confirms (needs --judge)",
            changes_output=True,
            flag="--until-judged",
            joins_with="judge",
            key="never",
        ),
    ] = False


class JobSpec(BaseModel):
    """One run: what it reads and writes, its edits and engine, and its settings by group."""

    manifest_uri: Annotated[
        str,
        Setting(
            "Parquet manifest: local path or fsspec URI (s3://...)",
            changes_output=True,
            fingerprint="always",
            key="never",  # a row's key holds its source's bytes, not where they were listed
        ),
    ]
    out: Annotated[str, Setting("output root: local path or fsspec URI", changes_output=False)]
    run_id: Annotated[str, Setting("the run's name under the output root", changes_output=False)]
    # the job's edit chain; a row's `edit` cell overrides it (and a row's key holds its chain)
    edits: Annotated[
        tuple[Edit, ...],
        Setting(
            "edit applied in every round; repeat to chain edits within a round "
            "(types, options and engines: see the epilog)",
            changes_output=True,
            flag="--edit",
            metavar="TYPE[=OPTION]",
            fingerprint="always",
            key="never",
        ),
    ] = ()
    engine: Annotated[
        str,
        Setting(
            f"one of: {', '.join(ENGINES)}",
            changes_output=True,
            flag="--engine",
            fingerprint="always",
        ),
    ] = DEFAULT_ENGINE
    rounds: RoundsConfig = Field(default_factory=RoundsConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    words: WordsConfig = Field(default_factory=WordsConfig)
    judging: JudgingConfig = Field(default_factory=JudgingConfig)
    inputs: InputsConfig = Field(default_factory=InputsConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    signal: SignalConfig = Field(default_factory=SignalConfig)
    stepaudio: StepAudioConfig = Field(default_factory=StepAudioConfig)

    @classmethod
    def setting_names(cls) -> list[str]:
        """Every setting's name: what run.json and a deployment's `job` hold."""
        return [item.name for item in declared(cls)]

    @model_validator(mode="before")
    @classmethod
    def _settings_by_name(cls, data: Any) -> Any:
        # run.json, deployments and callers give settings by name; the groups hold them
        return nest(cls, data) if isinstance(data, dict) else data

    @model_serializer(mode="wrap")
    def _by_name(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # serialised flat, by name, as run.json and deployments always held a job
        dumped = handler(self)
        flat: dict[str, Any] = {}
        for item in declared(type(self)):
            node = dumped
            for part in item.path[:-1]:
                node = node.get(part, {})
            if item.name in node:
                flat[item.name] = node[item.name]
        return flat

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> JobSpec:
        """A copy with settings changed by name (`update={"qc": "acx"}`), unvalidated like
        any model's copy."""
        paths = {item.name: item.path for item in declared(type(self))}
        top: dict[str, Any] = {}
        grouped: dict[str, dict[str, Any]] = {}
        for name, value in (update or {}).items():
            path = paths.get(name, (name,))
            if len(path) == 1:
                top[name] = value
            else:  # the run's groups are one level deep
                grouped.setdefault(path[0], {})[path[-1]] = value
        for group, values in grouped.items():
            top[group] = getattr(self, group).model_copy(update=values, deep=deep)
        return super().model_copy(update=top, deep=deep)

    def fingerprint(self) -> dict[str, object]:
        """What decides a run's outputs: a resumed attempt must match the first one. Which
        settings join is declared with each setting (`Setting.fingerprint`)."""
        return output_settings(self, "fingerprint", self.model_dump(mode="json"))

    def key_settings(self) -> dict[str, object]:
        """The run-wide settings of the incremental key (`Setting.key`); the key adds the
        engine's version (incremental.key_settings)."""
        return output_settings(self, "key", self.model_dump(mode="json"))

    @model_validator(mode="after")
    def _names(self) -> JobSpec:
        if not RUN_ID.match(self.run_id):
            raise ValueError(
                f"run id {self.run_id!r} must be 1-128 characters of letters, digits, '.', '_', '-'"
            )
        if self.engine not in ENGINES:
            raise ValueError(
                f"unknown engine {self.engine!r}; available engines: {', '.join(ENGINES)}"
            )
        return self

    @model_validator(mode="after")
    def _asr_needed(self) -> JobSpec:
        if self.qc_max_wer is not None and self.asr_models is None:
            raise ValueError("--qc-max-wer needs --asr-models (the ASR model measures the WER)")
        if self.word_timings == "asr" and self.asr_models is None:
            raise ValueError(
                "--word-timings asr needs --asr-models (the ASR model times the words)"
            )
        return self

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
        return QcPlan.of(self)

    def engine_options(self) -> EngineOptions:
        """Every engine's settings of this job, and the settings engines share."""
        return EngineOptions(
            **self.signal.model_dump(),
            **self.stepaudio.model_dump(),
            asr_models=self.asr_models,
            word_timings=word_timing_mode(self.word_timings, self.asr_models, self.edits),
            gpus=dict(self.gpus),
            batch_sizes=dict(self.batch_sizes),
        )

    def make_engine(self) -> Engine:
        """The engine this job runs, built as every command builds it (run, validate, deploy)."""
        return make_engine(self.engine, self.engine_options())


def _read_by_name(path: tuple[str, ...]) -> property:
    def read(job: JobSpec) -> Any:
        value: Any = job
        for part in path:
            value = getattr(value, part)
        return value

    return property(read, doc=f"the setting {'.'.join(path)}")


# The run's code reads a grouped setting by its name (`job.qc` is `job.quality.qc`).
for _item in declared(JobSpec):
    if len(_item.path) > 1:
        setattr(JobSpec, _item.name, _read_by_name(_item.path))
