"""Audio -> dual-codebook codes, plus what the decoder needs from a voice prompt.

Preprocessing follows the public release: mix down to mono, cap the peak at 0.6, then hand the
waveform at its own rate to the upstream tokenizer (which resamples to 16 kHz, normalises and
trims silence itself) and to the decoder's front end (24 kHz mel, CAM++ speaker embedding).
The upstream tokenizer only resamples *down* to 16 kHz (it asserts a higher input rate), so
audio below 16 kHz (8 kHz telephone audio, say) is resampled up to 16 kHz here first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stepedit_core.engines.stepaudio import tokens
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.audio import Audio

PEAK_CAP = 0.6
TOKENIZER_RATE = 16000
EMBEDDING_DIM = 192


@dataclass
class Encoded:
    """Codes of one clip and, when asked for, its decoder prompt features."""

    codes: list[int]
    feat: np.ndarray | None = None  # (frames, 80) float32: 24 kHz mel at 50 Hz
    embedding: np.ndarray | None = None  # (192,) float32 speaker embedding


def prepare(audio: Audio) -> Audio:
    """Mono, peak capped at 0.6 (louder clips are scaled down, quieter ones left alone)."""
    mono = audio_io.to_mono(audio)
    peak = float(np.max(np.abs(mono.samples))) if mono.frames else 0.0
    if peak > PEAK_CAP:
        return Audio(mono.samples / peak * PEAK_CAP, mono.sample_rate)
    return mono


class AudioTokenizer:
    """Wraps the upstream tokenizer and feature front end (or stand-ins with their interface)."""

    def __init__(self, upstream_tokenizer: Any, frontend: Any) -> None:
        self.upstream = upstream_tokenizer
        self.frontend = frontend

    @staticmethod
    def _tensor(audio: Audio) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(audio.samples[:, 0], dtype=np.float32))[None]

    def codes(self, prepared: Audio) -> list[int]:
        """Interleaved codes 0..5119 of prepared (mono, capped) audio."""
        if prepared.sample_rate < TOKENIZER_RATE:
            prepared = audio_io.resample(prepared, TOKENIZER_RATE)
        _, vq02, vq06 = self.upstream.wav2token(self._tensor(prepared), prepared.sample_rate)
        return tokens.interleave(list(vq02), list(vq06))

    def features(self, prepared: Audio) -> tuple[np.ndarray, np.ndarray]:
        """(mel (frames, 80), speaker embedding (192,)) of prepared audio, as float32 arrays."""
        wav = self._tensor(prepared)
        feat, _ = self.frontend.extract_speech_feat(wav, prepared.sample_rate)
        embedding = self.frontend.extract_spk_embedding(wav, prepared.sample_rate)
        feat_np = _numpy(feat).astype(np.float32)
        if feat_np.ndim == 3:
            feat_np = feat_np[0]
        emb_np = _numpy(embedding).astype(np.float32).reshape(-1)
        if emb_np.size != EMBEDDING_DIM:
            raise ValueError(
                f"speaker embedding has {emb_np.size} values, expected {EMBEDDING_DIM}"
            )
        return np.ascontiguousarray(feat_np), emb_np

    def encode(self, audio: Audio, with_features: bool) -> Encoded:
        prepared = prepare(audio)
        encoded = Encoded(self.codes(prepared))
        if with_features:
            encoded.feat, encoded.embedding = self.features(prepared)
        return encoded


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)
