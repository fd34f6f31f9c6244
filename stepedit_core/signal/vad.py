"""Speech detection with silero-vad, over blocks: the detector sees the audio once, a block at a
time, whatever its length.

Detection runs on a 16 kHz mono mixdown (the rate silero-vad's model is trained for), streamed
through soxr; silero-vad's ONNX model (onnxruntime, no torch: silero_onnx.py) scores 32 ms
windows one after another with its state carried across blocks, and silero-vad's hysteresis
rules (speech_hysteresis.py) turn the scores into spans once the stream ends. Spans
come back in frames of the original audio, their edges pulled over frames that sound like the
room tone of the pause next to them (10 ms frame levels, kept while streaming). `speech()` on a
whole array feeds it through the same `SpeechFinder`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from stepedit_core.signal.meters import FrameEnergy
from stepedit_core.signal.resample import Resampler, mono
from stepedit_core.signal.silero_onnx import MODEL_RATE, WINDOW, WindowScorer, load_session
from stepedit_core.signal.speech_hysteresis import spans_from_scores

VAD_RATE = MODEL_RATE
SPEECH_MIN_SILENCE_S = 0.1  # the pause that separates speech spans for QC and mastering
MIN_SPEECH_MS = 60  # shorter detections are kept as speech, not thrown into a pause
MAX_MIN_SILENCE_MS = 100
FEED_FRAMES = 1 << 18
# silero-vad's speech probability decays ~0.1 s after a word ends; span edges are pulled back over
# frames that are no louder than the pause's room tone (+ margin), at most this far:
LEVEL_FRAME_S = 0.01
MAX_PULL_END_S = 0.15
MAX_PULL_START_S = 0.05
ROOM_TONE_MARGIN_DB = 10.0
ROOM_TONE_MIN_DB = -80.0

Spans = list[tuple[int, int]]


class SileroVad:
    """silero-vad's ONNX model (the file ships in its wheel) in a single-threaded onnxruntime
    session, loaded once per process; every finder scores its own stream with it."""

    def __init__(self) -> None:
        self.session = load_session()

    def scorer(self) -> WindowScorer:
        """A fresh stream: the model's state and audio context start from silence."""
        return WindowScorer(self.session)

    def finder(self, sample_rate: int, channels: int, min_silence_s: float) -> SpeechFinder:
        return SpeechFinder(self, sample_rate, channels, min_silence_s)

    def speech(self, samples: np.ndarray, sample_rate: int, min_silence_s: float) -> Spans:
        """Speech spans as (start, end) frames of `samples`, sorted and not overlapping."""
        samples = samples.reshape(samples.shape[0], -1)
        finder = self.finder(sample_rate, samples.shape[1], min_silence_s)
        for at in range(0, samples.shape[0], FEED_FRAMES):
            finder.feed(samples[at : at + FEED_FRAMES])
        return finder.finish()


class SpeechFinder:
    """Feed blocks in order, `finish()` for the spans (see the module docstring)."""

    def __init__(
        self, vad: SileroVad, sample_rate: int, channels: int, min_silence_s: float
    ) -> None:
        self.vad = vad
        self.rate = sample_rate
        self.min_silence_ms = int(min(MAX_MIN_SILENCE_MS, max(1.0, min_silence_s * 1000)))
        self._resampler = Resampler(sample_rate, VAD_RATE, 1)
        self._pending = np.zeros(0, dtype=np.float32)
        self._scores: list[float] = []
        self._scored = 0  # 16 kHz samples seen
        self._levels = FrameEnergy(max(1, round(LEVEL_FRAME_S * sample_rate)))
        self._channels = channels
        self._scorer = vad.scorer()

    @property
    def frames(self) -> int:
        return self._levels.frames

    @property
    def scores(self) -> list[float]:
        """The model's speech probability of each 32 ms window scored so far."""
        return list(self._scores)

    def feed(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float32).reshape(-1, self._channels)
        self._levels.feed(block)
        self._score(self._resampler.feed(mono(block)[:, None])[:, 0])

    def finish(self) -> Spans:
        self._score(self._resampler.flush()[:, 0], last=True)
        found = spans_from_scores(
            self._scores,
            total_samples=self._scored,
            window=WINDOW,
            sample_rate=VAD_RATE,
            min_speech_ms=MIN_SPEECH_MS,
            min_silence_ms=self.min_silence_ms,
            pad_ms=0,
        )
        scale = self.rate / VAD_RATE
        frames = self.frames
        spans: Spans = []
        for found_start, found_end in found:
            start = max(0, int(np.floor(found_start * scale)))
            end = min(frames, int(np.ceil(found_end * scale)))
            if end <= start:
                continue
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
        size = self._levels.size
        power = self._levels.energies() / (size * self._channels)
        return refine_spans(power, size, self.rate, spans)

    def _score(self, audio16: np.ndarray, last: bool = False) -> None:
        self._scored += audio16.shape[0]
        data = np.concatenate([self._pending, audio16]) if self._pending.size else audio16
        whole = data.shape[0] // WINDOW * WINDOW
        if last and data.shape[0] > whole:  # the last window is padded with zeros
            data = np.concatenate([data, np.zeros(WINDOW - (data.shape[0] - whole), np.float32)])
            whole = data.shape[0]
        self._pending = np.array(data[whole:], dtype=np.float32)
        if whole:
            self._scores.extend(self._scorer.score(np.asarray(data[:whole], dtype=np.float32)))


@lru_cache(maxsize=1)
def shared_vad() -> SileroVad:
    """The process's one SileroVad: the vad edit, ACX mastering and QC all use it, so a
    worker loads the model once."""
    return SileroVad()


def speech_spans(samples: np.ndarray, sample_rate: int, vad: SileroVad | None = None) -> Spans:
    """silero-vad speech spans (SPEECH_MIN_SILENCE_S pauses) in frames of `samples`."""
    return (vad or shared_vad()).speech(samples, sample_rate, SPEECH_MIN_SILENCE_S)


def refine_spans(power: np.ndarray, size: int, sample_rate: int, spans: Spans) -> Spans:
    """Pull each speech span's edges over neighbouring frames that sound like the room tone of
    the pause next to them (10 ms frame power `power`, frames of `size` samples, under the
    pause's 25th percentile + 10 dB)."""
    count = power.shape[0]
    if not spans or count < 3:
        return spans
    level = 10 * np.log10(power.astype(np.float64) + 1e-20)
    bounds = [0] + [edge for span in spans for edge in span] + [count * size]
    quiet = []  # per pause (before span 0, between spans, after the last): room tone threshold
    for gap_start, gap_end in zip(bounds[0::2], bounds[1::2], strict=True):
        inside = level[-(-gap_start // size) : gap_end // size]
        floor = float(np.percentile(inside, 25)) if inside.size >= 3 else None
        quiet.append(None if floor is None else max(floor + ROOM_TONE_MARGIN_DB, ROOM_TONE_MIN_DB))
    refined = []
    for index, (start, end) in enumerate(spans):
        new_start, new_end = start, end
        limit = quiet[index]
        if limit is not None:
            stop = min(end, start + round(MAX_PULL_START_S * sample_rate))
            while new_start + size <= stop and level[new_start // size] < limit:
                new_start += size
        limit = quiet[index + 1]
        if limit is not None:
            stop = max(new_start, end - round(MAX_PULL_END_S * sample_rate))
            while new_end - size >= stop and level[(new_end - size) // size] < limit:
                new_end -= size
        if new_end > new_start:
            refined.append((new_start, new_end))
    return refined or spans
