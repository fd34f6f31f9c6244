"""Block IO: audio read and written a block at a time, so memory stays at one block however long
the file is. Blocks are float32 arrays shaped (frames, channels), as everywhere in the product.

`BLOCK_S` (a few seconds) is the default block; the streaming code never relies on a block
size, so tests run blocks much smaller than the clip to put boundaries inside speech and peaks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import soundfile as sf

BLOCK_S = 4.0
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class BlockInfo:
    frames: int
    sample_rate: int
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate)


def block_frames(sample_rate: int, seconds: float = BLOCK_S) -> int:
    return max(1, round(seconds * sample_rate))


def file_info(path: str | Path) -> BlockInfo:
    info = sf.info(str(path))
    return BlockInfo(int(info.frames), int(info.samplerate), int(info.channels))


def read_blocks(
    path: str | Path, frames: int | None = None, start: int = 0, stop: int | None = None
) -> Iterator[np.ndarray]:
    """Blocks of `frames` (default BLOCK_S) from `path`, frames `start`..`stop`."""
    with sf.SoundFile(str(path)) as handle:
        size = frames or block_frames(handle.samplerate)
        end = handle.frames if stop is None else min(stop, handle.frames)
        handle.seek(start)
        at = start
        while at < end:
            block = handle.read(min(size, end - at), dtype="float32", always_2d=True)
            if block.shape[0] == 0:
                break
            at += block.shape[0]
            yield block


class FileReader:
    """Random access to an audio file's frames (`read(start, stop)`), one open handle."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._file = sf.SoundFile(self.path)
        self.frames, self.channels = int(self._file.frames), int(self._file.channels)
        self.sample_rate = int(self._file.samplerate)

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.frames, stop)
        if stop <= start:
            return np.zeros((0, self.channels), dtype=np.float32)
        self._file.seek(start)
        return self._file.read(stop - start, dtype="float32", always_2d=True)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ranges(read: Callable[[int, int], np.ndarray], frames: int, size: int) -> Iterator[np.ndarray]:
    """A signal given by `read(start, stop)` as consecutive blocks of `size` frames."""
    for at in range(0, frames, max(1, size)):
        yield read(at, min(frames, at + size))


def array_blocks(samples: np.ndarray, frames: int) -> Iterator[np.ndarray]:
    """An in-memory (frames, channels) array as blocks (views, no copies)."""
    for at in range(0, samples.shape[0], max(1, frames)):
        yield samples[at : at + frames]


def collect(blocks: Iterable[np.ndarray], channels: int) -> np.ndarray:
    """Join blocks into one array (tests and short clips only)."""
    parts = [np.asarray(b, dtype=np.float32).reshape(-1, channels) for b in blocks]
    if not parts:
        return np.zeros((0, channels), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


class BlockWriter:
    """Writes blocks to an audio file (FLAC 24-bit by default, any soundfile format); samples are
    clipped to [-1, 1] first (the formats store integers or are defined in that range).
    `sha256` is the finished file's hash, read back in chunks after closing (paths only; a file
    object, such as a BytesIO, is the caller's to hash)."""

    def __init__(
        self,
        path: str | Path | BinaryIO,
        sample_rate: int,
        channels: int,
        format: str = "FLAC",
        subtype: str | None = "PCM_24",
        **options: Any,
    ) -> None:
        self.path = Path(path) if isinstance(path, str | Path) else None
        self.frames = 0
        self._file = sf.SoundFile(
            str(path) if self.path else path,
            "w",
            samplerate=sample_rate,
            channels=channels,
            format=format,
            subtype=subtype,
            **options,
        )
        self._sha256: str | None = None

    def write(self, block: np.ndarray) -> None:
        if block.shape[0]:
            self._file.write(np.clip(block, -1.0, 1.0))
            self.frames += block.shape[0]

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def sha256(self) -> str:
        if self.path is None:
            raise ValueError("written to a file object, not a path: hash the bytes instead")
        if self._sha256 is None:
            self.close()
            self._sha256 = file_sha256(self.path)
        return self._sha256


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
