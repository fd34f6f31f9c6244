"""Audio in and out: read from any fsspec URI, resample, mix down, encode FLAC, hash.

Samples are float32 arrays shaped (frames, channels) everywhere in the product, so mono and
multichannel audio take the same path; engines that need mono call `to_mono`.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.sources import DECODED_FACTOR, MB, InputLimits, read_source

DEFAULT_LIMITS = InputLimits()


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


def read_bytes(uri: str, limits: InputLimits = DEFAULT_LIMITS) -> bytes:
    """Read a whole object from a local path or any fsspec URI, within `limits` (sources.py).
    An unreachable endpoint is retried with backoff (a blip must not fail the clip); what is
    wrong with the object itself (missing, a directory, unreadable) fails at once."""
    try:
        return read_source(uri, limits)
    except FileNotFoundError as exc:
        raise ItemFailure("missing_file", f"audio file not found: {uri}") from exc
    except IsADirectoryError as exc:
        raise ItemFailure(
            "unreadable_file", f"audio_uri is a directory, not a file: {uri}"
        ) from exc
    except OSError as exc:
        raise ItemFailure("unreadable_file", f"cannot read {uri}: {exc}") from exc


# libsndfile names the in-memory buffer it was given (`<_io.BytesIO object at 0x...>`)
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def decode(data: bytes, uri: str = "<bytes>", limits: InputLimits = DEFAULT_LIMITS) -> Audio:
    """Decode audio bytes and reject what no engine can use (empty, non-audio, NaN/inf), and
    a header that claims more samples than `limits` allow (refused before any allocation)."""
    if not data:
        raise ItemFailure("empty_file", f"audio file is empty (0 bytes): {uri}")
    try:
        info = sf.info(io.BytesIO(data))
        claimed = int(info.frames) * int(info.channels) * 4  # as float32
        if claimed > limits.max_decoded_bytes:
            raise ItemFailure(
                "file_too_large",
                f"field 'audio_uri' {uri}: its header claims {info.frames} frames x "
                f"{info.channels} channels ({claimed} bytes decoded), over "
                f"{limits.max_decoded_bytes // MB} MB ({DECODED_FACTOR} x --max-input-mb)",
            )
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = _BUFFER_REPR.sub("the file", str(exc))
        raise ItemFailure("not_audio", f"not a readable audio file: {uri} ({reason})") from exc
    if samples.shape[0] == 0:
        raise ItemFailure("empty_audio", f"audio file has no samples: {uri}")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise ItemFailure("non_finite_samples", f"{bad} NaN/inf samples in {uri}")
    return Audio(samples, int(rate))


def load(uri: str, limits: InputLimits = DEFAULT_LIMITS) -> tuple[Audio, bytes]:
    """Read and decode one clip; returns the audio and the raw bytes (hashed for keys)."""
    data = read_bytes(uri, limits)
    return decode(data, uri, limits), data


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
