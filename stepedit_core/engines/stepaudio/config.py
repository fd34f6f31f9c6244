"""The Step-Audio-EditX engine's settings (declared: flag, help, whether they change the
output). Sampling overrides have no flag: they are for experiments through the Python API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from stepedit_core.catalog.segments import DEFAULT_SEGMENT_S
from stepedit_core.foundation.settings import Setting, SettingsGroup


class StepAudioConfig(SettingsGroup):
    """Step-Audio-EditX engine"""

    models_dir: Annotated[
        str | None,
        Setting(
            "folder holding Step-Audio-Tokenizer/ and Step-Audio-EditX/",
            changes_output=True,
            flag="--models",
            metavar="DIR",
            fingerprint="always",
        ),
    ] = None
    stepaudio_src: Annotated[
        str | None,
        # the public release's code; which weights ran is recorded by the models' fingerprint
        Setting(
            "checkout of the public Step-Audio-EditX repository (tokenizer/decoder code); "
            "default: $STEPEDIT_STEPAUDIO_SRC",
            changes_output=False,
            flag="--stepaudio-src",
            metavar="DIR",
        ),
    ] = None
    prompt_mode: Annotated[
        Literal["chain", "fixed"],
        Setting(
            "voice prompt of round k: the previous round's output, or the original",
            changes_output=True,
            flag="--prompt-mode",
            fingerprint="always",
        ),
    ] = "chain"
    llm_backend: Annotated[
        Literal["transformers", "vllm"],
        Setting(
            "the model's language-model runtime (vllm needs the package and a GPU)",
            changes_output=True,
            flag="--llm-backend",
            fingerprint="always",
        ),
    ] = "transformers"
    segment_seconds: Annotated[
        float,
        Field(ge=2.0, le=30.0),
        Setting(
            "step-audio-editx: a clip longer than S seconds is edited in segments cut in its "
            "pauses and stitched back (text per segment from a `segments` column or "
            f"--asr-models; default {DEFAULT_SEGMENT_S:g}, at most 30)",
            changes_output=True,
            flag="--segment-seconds",
            metavar="S",
        ),
    ] = DEFAULT_SEGMENT_S
    # sampling overrides of the release's generate() call (generation_settings.py)
    stepaudio_temperature: Annotated[
        float | None,
        Field(gt=0),
        Setting("sampling temperature instead of the release's", changes_output=True),
    ] = None
    stepaudio_top_k: Annotated[
        int | None,
        Field(ge=1),
        Setting("top-k instead of the model folder's", changes_output=True),
    ] = None
    stepaudio_greedy: Annotated[
        bool, Setting("greedy decoding instead of sampling", changes_output=True)
    ] = False
    vllm_gpu_memory_utilization: Annotated[
        float | None,
        Field(gt=0, le=1),
        Setting("share of the GPU's memory vLLM takes", changes_output=False),
    ] = None

    def sampling_overrides(self) -> dict[str, Any]:
        """What `sampling_config` takes from the engine's settings."""
        return {
            "stepaudio_temperature": self.stepaudio_temperature,
            "stepaudio_top_k": self.stepaudio_top_k,
            "stepaudio_greedy": self.stepaudio_greedy,
        }
