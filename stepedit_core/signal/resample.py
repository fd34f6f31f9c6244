"""Resampling with soxr (HQ), whole arrays or streamed block by block (a ResampleStream keeps its
filter state across blocks, so the streamed output equals the one-shot one up to rounding)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import soxr

QUALITY = "HQ"


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """(frames, channels) float32 at `rate` -> at `to_rate`."""
    if rate == to_rate:
        return samples
    out = soxr.resample(samples, rate, to_rate, quality=QUALITY)
    return np.asarray(out, dtype=np.float32).reshape(-1, samples.shape[1])


class Resampler:
    """Streaming resampler: `feed` each block, `flush` at the end ((frames, channels) out)."""

    def __init__(self, rate: int, to_rate: int, channels: int) -> None:
        self.channels = channels
        self._same = rate == to_rate
        self._stream = (
            None
            if self._same
            else soxr.ResampleStream(rate, to_rate, channels, dtype="float32", quality=QUALITY)
        )

    def feed(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32).reshape(-1, self.channels)
        if self._stream is None:
            return block
        data = block[:, 0] if self.channels == 1 else block
        out = self._stream.resample_chunk(data, last=last)
        return np.asarray(out, dtype=np.float32).reshape(-1, self.channels)

    def flush(self) -> np.ndarray:
        return self.feed(np.zeros((0, self.channels), dtype=np.float32), last=True)


def resample_blocks(
    blocks: Iterable[np.ndarray], rate: int, to_rate: int, channels: int
) -> Iterator[np.ndarray]:
    stream = Resampler(rate, to_rate, channels)
    for block in blocks:
        out = stream.feed(block)
        if out.shape[0]:
            yield out
    tail = stream.flush()
    if tail.shape[0]:
        yield tail


def mono(block: np.ndarray) -> np.ndarray:
    """(frames,) mixdown of a (frames, channels) block."""
    return block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
