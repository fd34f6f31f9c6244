"""Delivered-file formats: FLAC (default, lossless 24-bit), WAV (24-bit PCM) and MP3 (CBR).

MP3 is written by libsndfile (through soundfile, >= 1.1 of the library), which encodes with LAME
and decodes with mpg123; the soundfile wheel bundles all three (BSD wrapper, LGPL libraries
loaded as shared objects, so nothing GPL is linked into the product). The bitrate is set through
libsndfile's compression level, which maps linearly onto 320..32 kbps for constant-bitrate
MPEG-1 Layer III; every frame of the result is checked to carry exactly the requested bitrate.
MP3 is always 44.1 kHz (ACX's rate, and MPEG-1's most common one); the audio is resampled first.

An encoder moves peaks (a lossy code does not keep the waveform), so a file that must stay under
a sample-peak limit is decoded back and measured; when the encoded peak is over the limit the
audio is turned down by the excess (plus TRIM_MARGIN_DB) and encoded again.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from stepedit_core.audio import Audio, decode, encode_flac, resample

FORMATS = ("flac", "wav", "mp3")
MP3_BITRATES = (128, 160, 192, 224, 256, 320)  # kbps, MPEG-1 Layer III
MP3_RATE = 44100
MP3_MAX_KBPS, MP3_MIN_KBPS = 320, 32  # the ends of libsndfile's compression-level scale
TRIM_MARGIN_DB = 0.1
TRIM_TRIES = 4
# MPEG-1 Layer III: bitrate index -> kbps; sample-rate index -> Hz
_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0)
_MPEG1_RATES = (44100, 48000, 32000, 0)


@dataclass(frozen=True)
class DeliverFormat:
    name: str = "flac"
    mp3_bitrate: int = 192  # kbps, CBR
    mono: bool = False  # mix every delivered file down to one channel (one layout per run)

    def __post_init__(self) -> None:
        if self.name not in FORMATS:
            raise ValueError(f"deliver format {self.name!r}: expected one of {', '.join(FORMATS)}")
        if self.mp3_bitrate not in MP3_BITRATES:
            choices = ", ".join(map(str, MP3_BITRATES))
            raise ValueError(f"mp3 bitrate {self.mp3_bitrate}: expected one of {choices} (kbps)")

    @property
    def ext(self) -> str:
        return self.name

    @property
    def lossy(self) -> bool:
        return self.name == "mp3"


def encode(audio: Audio, fmt: DeliverFormat) -> bytes:
    """`audio` as a file in `fmt` (MP3: resampled to 44.1 kHz, constant bitrate)."""
    if fmt.mono and audio.channels > 1:
        audio = Audio(audio.samples.mean(axis=1, keepdims=True), audio.sample_rate)
    if fmt.name == "flac":
        return encode_flac(audio)
    clipped = np.clip(audio.samples, -1.0, 1.0)
    buffer = io.BytesIO()
    if fmt.name == "wav":
        sf.write(buffer, clipped, audio.sample_rate, format="WAV", subtype="PCM_24")
        return buffer.getvalue()
    clipped = np.clip(resample(Audio(clipped, audio.sample_rate), MP3_RATE).samples, -1.0, 1.0)
    level = (MP3_MAX_KBPS - fmt.mp3_bitrate) / (MP3_MAX_KBPS - MP3_MIN_KBPS)
    sf.write(
        buffer,
        clipped,
        MP3_RATE,
        format="MP3",
        subtype="MPEG_LAYER_III",
        compression_level=level,
        bitrate_mode="CONSTANT",
    )
    data = buffer.getvalue()
    found = mp3_bitrates(data)
    if found != {fmt.mp3_bitrate}:  # a libsndfile that maps the level differently
        raise RuntimeError(f"MP3 encoder wrote {sorted(found)} kbps, not {fmt.mp3_bitrate} CBR")
    return data


def mp3_bitrates(data: bytes) -> set[int]:
    """The bitrates (kbps) of the MPEG-1 Layer III frames in `data` (one value for CBR)."""
    at = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2 tag: 10-byte header, syncsafe size
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        at = 10 + size
    found: set[int] = set()
    while at + 4 <= len(data):
        b1, b2 = data[at + 1], data[at + 2]
        if data[at] != 0xFF or (b1 & 0xE0) != 0xE0:
            break  # end of the frames (a trailing tag) or not an MPEG stream
        if (b1 >> 3) & 3 != 3 or (b1 >> 1) & 3 != 1:
            raise ValueError(f"frame at byte {at} is not MPEG-1 Layer III")
        kbps, rate = _L3_KBPS[b2 >> 4], _MPEG1_RATES[(b2 >> 2) & 3]
        if not kbps or not rate:
            raise ValueError(f"frame at byte {at} has a free or bad bitrate / sample rate")
        found.add(kbps)
        at += 144 * kbps * 1000 // rate + ((b2 >> 1) & 1)
    return found


def encode_under_peak(
    audio: Audio, fmt: DeliverFormat, peak_max_dbfs: float | None
) -> tuple[bytes, Audio, float]:
    """Encode; for a lossy format with a peak limit, decode back and turn down by any excess
    over the limit until the decoded file meets it. Returns the file, its decoded audio and the
    trim applied (dB, <= 0)."""
    trim = 0.0
    for _ in range(TRIM_TRIES):
        scaled = (
            audio if trim == 0.0 else Audio(audio.samples * 10 ** (trim / 20), audio.sample_rate)
        )
        data = encode(scaled, fmt)
        decoded = decode(data, f"<{fmt.name}>")
        if not fmt.lossy or peak_max_dbfs is None:
            return data, decoded, trim
        peak = float(np.max(np.abs(decoded.samples), initial=0.0))
        over = 20 * np.log10(max(peak, 1e-12)) - peak_max_dbfs
        if over <= 0:
            return data, decoded, trim
        trim -= over + TRIM_MARGIN_DB
    return data, decoded, trim
