"""The models each stage of the model engine holds once `setup()` has loaded them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stepedit_core.engines.stepaudio.decoder import Decoder
    from stepedit_core.engines.stepaudio.llm import SamplingConfig, TransformersLLM
    from stepedit_core.engines.stepaudio.tokenizer import AudioTokenizer
    from stepedit_core.engines.stepaudio.vllm_backend import VLLMLLM


@dataclass
class TokenizeModels:
    tokenizer: AudioTokenizer


@dataclass
class RoundTripModels:
    """What the edit stage needs for the trip between two chained passes (loaded on first use)."""

    tokenizer: AudioTokenizer
    decoder: Decoder


@dataclass
class EditModels:
    llm: TransformersLLM | VLLMLLM
    sampling: SamplingConfig  # the folder's generation settings, with the run's overrides
    fingerprint: str  # the model folder's (layout.fingerprint), kept in every record
    round_trip: RoundTripModels | None = None


@dataclass
class DecodeModels:
    decoder: Decoder
