"""VAD: find speech with silero-vad, then shorten every pause longer than a threshold to it.

Detection runs on a 16 kHz mono mixdown (the rate silero-vad's model is trained for); the cut is
made on the original samples at their own rate, the same cut for every channel. A shortened
pause keeps its two edges (the room tone right after and right before speech, where soft
consonants and breaths live) joined by a short equal-power crossfade, so no digital silence is
ever inserted.

Leading and trailing silence are not held to the pause limit but to a delivery window: by default
up to 0.75 s is kept before the first word and up to 1.5 s after the last (the part next to
speech), inside ACX's 0.5-1 s head and 1-5 s tail of room tone, so `vad` does not take away the
room tone an audiobook must start and end with. Shorter heads and tails are left as they are
(vad never adds audio; `loudness=acx` fills them with room tone). `shorten_pauses(head_s=...,
tail_s=...)` takes another window.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import pairwise

import numpy as np
import soxr

from stepedit_core.delivery import PROFILES
from stepedit_core.engines.signal.util import crossfade

VAD_RATE = 16000
CROSSFADE_S = 0.01
MIN_SPEECH_MS = 60  # shorter detections are kept as speech, not thrown into a pause
MAX_MIN_SILENCE_MS = 100
# silero-vad's speech probability decays ~0.1 s after a word ends; span edges are pulled back over
# frames that are no louder than the pause's room tone (+ margin), at most this far:
LEVEL_FRAME_S = 0.01
MAX_PULL_END_S = 0.15
MAX_PULL_START_S = 0.05
ROOM_TONE_MARGIN_DB = 10.0
ROOM_TONE_MIN_DB = -80.0
# the most leading / trailing silence kept: the ACX mastering targets, inside its window
HEAD_KEEP_S = float(PROFILES["acx"].head_target_s or 0.75)
TAIL_KEEP_S = float(PROFILES["acx"].tail_target_s or 1.5)


class SileroVad:
    """silero-vad's JIT model (its weights ship in the wheel); loaded once per actor."""

    def __init__(self) -> None:
        import torch

        threads = torch.get_num_threads()
        from silero_vad import get_speech_timestamps, load_silero_vad

        # importing silero_vad pins the whole process to one torch thread; other stages
        # running in the same process (in-process executor) must keep theirs
        torch.set_num_threads(threads)
        self._model = load_silero_vad()
        self._timestamps = get_speech_timestamps

    def speech(
        self, samples: np.ndarray, sample_rate: int, min_silence_s: float
    ) -> list[tuple[int, int]]:
        """Speech spans as (start, end) frames of `samples`, sorted and not overlapping."""
        import torch

        mono = samples.mean(axis=1) if samples.shape[1] > 1 else samples[:, 0]
        if sample_rate != VAD_RATE:
            mono = soxr.resample(mono, sample_rate, VAD_RATE, quality="HQ")
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        min_silence_ms = int(min(MAX_MIN_SILENCE_MS, max(1.0, min_silence_s * 1000)))
        # the model runs on 32 ms chunks, one after another: more than one torch thread only
        # adds hand-over cost (measured 10-30x slower with 2 threads on a busy 2-core machine),
        # so inference runs single-threaded and the process's own setting is put back after
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                stamps = self._timestamps(
                    torch.from_numpy(mono),
                    self._model,
                    sampling_rate=VAD_RATE,
                    min_speech_duration_ms=MIN_SPEECH_MS,
                    min_silence_duration_ms=min_silence_ms,
                    speech_pad_ms=0,
                )
        finally:
            torch.set_num_threads(threads)
        scale = sample_rate / VAD_RATE
        frames = samples.shape[0]
        spans: list[tuple[int, int]] = []
        for stamp in stamps:
            start = max(0, int(np.floor(stamp["start"] * scale)))
            end = min(frames, int(np.ceil(stamp["end"] * scale)))
            if end <= start:
                continue
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
        return refine_spans(samples, sample_rate, spans)


@lru_cache(maxsize=1)
def shared_vad() -> SileroVad:
    """The process's one SileroVad: the vad edit, ACX mastering and QC all use it, so a
    worker loads the model once."""
    return SileroVad()


def refine_spans(
    samples: np.ndarray, sample_rate: int, spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Pull each speech span's edges over neighbouring frames that sound like the room tone of
    the pause next to them (10 ms frame RMS under the pause's 25th percentile + 10 dB)."""
    size = max(1, round(LEVEL_FRAME_S * sample_rate))
    count = samples.shape[0] // size
    if not spans or count < 3:
        return spans
    blocks = samples[: count * size].reshape(count, -1)  # one row per frame, all channels
    power = np.einsum("ij,ij->i", blocks, blocks) / blocks.shape[1]  # no squared copy
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


def shorten_pauses(
    samples: np.ndarray,
    sample_rate: int,
    speech: list[tuple[int, int]],
    max_pause_s: float,
    crossfade_s: float = CROSSFADE_S,
    head_s: float = HEAD_KEEP_S,
    tail_s: float = TAIL_KEEP_S,
) -> np.ndarray:
    """Cut every gap between `speech` spans that is longer than `max_pause_s` down to exactly
    that length, and leading / trailing silence to at most `head_s` / `tail_s` (the part next to
    speech is kept). Speech frames are copied untouched."""
    frames = samples.shape[0]
    keep = max(1, round(max_pause_s * sample_rate))
    xfade = max(1, round(crossfade_s * sample_rate))
    if not speech:
        return samples
    first, last = speech[0][0], speech[-1][1]
    start = max(0, first - round(head_s * sample_rate))  # room tone next to the first word
    stop = min(frames, last + round(tail_s * sample_rate))  # room tone after the last word
    pieces: list[np.ndarray] = []
    cursor = start
    for (_, gap_start), (gap_end, _) in pairwise(speech):
        length = gap_end - gap_start
        if length <= keep:
            continue
        fade = min(xfade, keep // 2, length - keep)
        head = gap_start + (keep + fade) // 2  # end of the pause's first edge (fade included)
        tail = gap_end - (keep + fade - (keep + fade) // 2)  # start of its last edge
        pieces.append(samples[cursor : head - fade])
        if fade > 0:
            pieces.append(crossfade(samples[head - fade : head], samples[tail : tail + fade]))
        cursor = tail + fade
    pieces.append(samples[cursor:stop])
    return np.ascontiguousarray(np.concatenate(pieces, axis=0), dtype=np.float32)
