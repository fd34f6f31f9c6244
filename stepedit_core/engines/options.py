"""What an engine is built with: every engine's declared settings (each engine's config module
beside it) and the settings engines share, resolved for one run (`JobSpec.engine_options`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, Field

from stepedit_core.engines.signal.config import SignalConfig
from stepedit_core.engines.stepaudio.config import StepAudioConfig
from stepedit_core.foundation.edits import SIGNAL, STEPAUDIO
from stepedit_core.foundation.settings import declared


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


# engine name -> the engine's own settings (`stepedit engines` lists them)
ENGINE_CONFIGS = {SIGNAL: SignalConfig, STEPAUDIO: StepAudioConfig}


def engine_settings(name: str) -> dict[str, dict[str, Any]]:
    """An engine's own settings: name -> flag (None: Python API only), default, help."""
    config = ENGINE_CONFIGS.get(name)
    if config is None:
        return {}
    return {
        item.name: {"flag": item.setting.flag, "default": item.default, "help": item.setting.help}
        for item in declared(config)
        if item.setting is not None
    }
