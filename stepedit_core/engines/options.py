"""What an engine is built with: every engine's declared settings (each engine's config module
beside it) and the settings engines share, resolved for one run (`JobSpec.engine_options`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, Field

from stepedit_core.engines.signal.config import SignalConfig
from stepedit_core.engines.stepaudio.config import StepAudioConfig


class EngineOptions(SignalConfig, StepAudioConfig):
    """Run-level engine settings. Engines ignore what does not concern them."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    asr_models: str | None = None  # a faster-whisper (CTranslate2) folder: stepedit_core/words
    # "auto" or "asr": every round's output gets word timings (stepedit_core/words/timing_stage)
    word_timings: str | None = None
    gpus: dict[str, float] = Field(default_factory=dict)  # stage name -> GPU fraction per actor
    batch_sizes: dict[str, int] = Field(default_factory=dict)  # stage name -> batch size
    # stand-ins for the model's components (tests, experiments): key -> factory(folder)
    stepaudio_factories: dict[str, Callable[..., Any]] = Field(default_factory=dict)


ENGINE_CONFIGS = (SignalConfig, StepAudioConfig)
