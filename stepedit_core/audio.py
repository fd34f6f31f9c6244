"""Audio in and out: read from any fsspec URI, resample, mix down, encode FLAC, hash.

Samples are float32 arrays shaped (frames, channels) everywhere in the product, so mono and
multichannel audio take the same path; engines that need mono call `to_mono`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import fsspec
import numpy as np
import soundfile as sf
import soxr

from stepedit_core.failures import ItemFailure
from stepedit_core.retry import retrying


@dataclass
class Audio:
    samples: np.ndarray  # float32, (frames, channels)
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.ndim == 1:
            self.samples = self.samples[:, None]
        self.samples = np.ascontiguousarray(self.samples, dtype=np.float32)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(uri: str) -> bytes:
    """Read a whole object from a local path or any fsspec URI. An unreachable endpoint is
    retried with backoff (a blip must not fail the clip); what is wrong with the object itself
    (missing, a directory, unreadable) fails at once."""

    def read() -> bytes:
        with fsspec.open(uri, "rb") as handle:
            return handle.read()

    try:
        return retrying(read, f"reading {uri}")
    except FileNotFoundError as exc:
        raise ItemFailure("missing_file", f"audio file not found: {uri}") from exc
    except IsADirectoryError as exc:
        raise ItemFailure(
            "unreadable_file", f"audio_uri is a directory, not a file: {uri}"
        ) from exc
    except OSError as exc:
        raise ItemFailure("unreadable_file", f"cannot read {uri}: {exc}") from exc


def decode(data: bytes, uri: str = "<bytes>") -> Audio:
    """Decode audio bytes and reject what no engine can use (empty, non-audio, NaN/inf)."""
    if not data:
        raise ItemFailure("empty_file", f"audio file is empty (0 bytes): {uri}")
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise ItemFailure("not_audio", f"not a readable audio file: {uri} ({exc})") from exc
    if samples.shape[0] == 0:
        raise ItemFailure("empty_audio", f"audio file has no samples: {uri}")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise ItemFailure("non_finite_samples", f"{bad} NaN/inf samples in {uri}")
    return Audio(samples, int(rate))


def load(uri: str) -> tuple[Audio, bytes]:
    """Read and decode one clip; returns the audio and the raw bytes (hashed for keys)."""
    data = read_bytes(uri)
    return decode(data, uri), data


def to_mono(audio: Audio) -> Audio:
    if audio.channels == 1:
        return audio
    return Audio(audio.samples.mean(axis=1, keepdims=True), audio.sample_rate)


def resample(audio: Audio, rate: int) -> Audio:
    if audio.sample_rate == rate:
        return audio
    out = soxr.resample(audio.samples, audio.sample_rate, rate, quality="HQ")
    return Audio(np.asarray(out, dtype=np.float32).reshape(-1, audio.channels), rate)


def encode_flac(audio: Audio) -> bytes:
    """Lossless FLAC (24-bit). Samples are clipped to [-1, 1] first: FLAC stores integers."""
    buffer = io.BytesIO()
    clipped = np.clip(audio.samples, -1.0, 1.0)
    sf.write(buffer, clipped, audio.sample_rate, format="FLAC", subtype="PCM_24")
    return buffer.getvalue()
