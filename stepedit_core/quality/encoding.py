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
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from stepedit_core.foundation.audio import Audio, decode
from stepedit_core.signal.blocks import (
    BlockWriter,
    array_blocks,
    block_frames,
    file_info,
    file_sha256,
    read_blocks,
)
from stepedit_core.signal.meters import LevelMeter
from stepedit_core.signal.resample import Resampler

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
    buffer = io.BytesIO()
    blocks = array_blocks(audio.samples, block_frames(audio.sample_rate))
    encode_blocks(blocks, audio.sample_rate, audio.channels, fmt, buffer)
    data = buffer.getvalue()
    if fmt.lossy:
        _check_bitrate(mp3_bitrates(data), fmt)
    return data


def encode_blocks(
    blocks: Iterable[np.ndarray],
    sample_rate: int,
    channels: int,
    fmt: DeliverFormat,
    target: str | Path | BinaryIO,
    gain_db: float = 0.0,
) -> int:
    """Encode a stream of blocks into `target` (a path or a file object), turned by `gain_db`;
    memory: one block. Returns the frames written (at the delivered rate)."""
    out_channels = 1 if fmt.mono and channels > 1 else channels
    rate = MP3_RATE if fmt.lossy else sample_rate
    options: dict[str, Any] = {"format": fmt.name.upper()}
    if fmt.name == "mp3":
        options["subtype"] = "MPEG_LAYER_III"
        options["compression_level"] = (MP3_MAX_KBPS - fmt.mp3_bitrate) / (
            MP3_MAX_KBPS - MP3_MIN_KBPS
        )
        options["bitrate_mode"] = "CONSTANT"
    else:
        options["subtype"] = "PCM_24"
    resampler = Resampler(sample_rate, rate, out_channels)
    gain = np.float32(10 ** (gain_db / 20))
    with BlockWriter(target, rate, out_channels, **options) as writer:
        for block in blocks:
            if out_channels != channels:
                block = block.mean(axis=1, keepdims=True)
            if gain_db:
                block = block * gain
            # clipped before the resampler (FLAC and WAV store integers) and after it (its
            # ripple can cross full scale)
            writer.write(resampler.feed(np.clip(block, -1.0, 1.0)))
        writer.write(resampler.flush())
    return writer.frames


@dataclass(frozen=True)
class EncodedFile:
    path: Path
    sha256: str
    trim_db: float  # <= 0: the turn-down that brought the decoded peak under the limit
    peak_dbfs: float | None  # sample peak of the decoded file (lossy formats under a limit)
    frames: int


def encode_file(
    source: str | Path,
    target: str | Path,
    fmt: DeliverFormat,
    peak_max_dbfs: float | None = None,
    block: int | None = None,
) -> EncodedFile:
    """`encode_under_peak` from file to file in blocks: any length, one block in memory. The
    decoded file is read back (in blocks) to measure its peak; the sha256 is of the file."""
    info = file_info(source)
    trim, peak = 0.0, None
    for _ in range(TRIM_TRIES):
        frames = encode_blocks(
            read_blocks(source, block), info.sample_rate, info.channels, fmt, target, trim
        )
        if fmt.lossy:
            _check_bitrate(mp3_file_bitrates(target), fmt)
        if not fmt.lossy or peak_max_dbfs is None:
            break
        meter = LevelMeter()
        for decoded in read_blocks(target, block):
            meter.feed(decoded)
        peak = meter.peak_db
        over = peak - peak_max_dbfs
        if over <= 0:
            break
        trim -= over + TRIM_MARGIN_DB
    return EncodedFile(Path(target), file_sha256(target), trim, peak, frames)


def _check_bitrate(found: set[int], fmt: DeliverFormat) -> None:
    if found != {fmt.mp3_bitrate}:  # a libsndfile that maps the level differently
        raise RuntimeError(f"MP3 encoder wrote {sorted(found)} kbps, not {fmt.mp3_bitrate} CBR")


def mp3_file_bitrates(path: str | Path) -> set[int]:
    """`mp3_bitrates` of a file, reading only the frame headers (and an ID3v2 tag's size)."""
    found: set[int] = set()
    with open(path, "rb") as handle:
        head = handle.read(10)
        at = 0
        if head[:3] == b"ID3" and len(head) >= 10:
            at = 10 + ((head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9])
        while True:
            handle.seek(at)
            header = handle.read(4)
            if len(header) < 4:
                break
            step = _frame(header, at, found)
            if step is None:
                break
            at += step
    return found


def mp3_bitrates(data: bytes) -> set[int]:
    """The bitrates (kbps) of the MPEG-1 Layer III frames in `data` (one value for CBR)."""
    at = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2 tag: 10-byte header, syncsafe size
        size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
        at = 10 + size
    found: set[int] = set()
    while at + 4 <= len(data):
        step = _frame(data[at : at + 4], at, found)
        if step is None:
            break
        at += step
    return found


def _frame(header: bytes, at: int, found: set[int]) -> int | None:
    """Add one frame header's bitrate to `found`; its length in bytes, None past the frames."""
    b1, b2 = header[1], header[2]
    if header[0] != 0xFF or (b1 & 0xE0) != 0xE0:
        return None  # end of the frames (a trailing tag) or not an MPEG stream
    if (b1 >> 3) & 3 != 3 or (b1 >> 1) & 3 != 1:
        raise ValueError(f"frame at byte {at} is not MPEG-1 Layer III")
    kbps, rate = _L3_KBPS[b2 >> 4], _MPEG1_RATES[(b2 >> 2) & 3]
    if not kbps or not rate:
        raise ValueError(f"frame at byte {at} has a free or bad bitrate / sample rate")
    found.add(kbps)
    return 144 * kbps * 1000 // rate + ((b2 >> 1) & 1)


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
