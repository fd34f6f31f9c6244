"""Speech spans from per-window speech probabilities, by hysteresis (silero-vad's rules).

A span opens at the first window scoring at least `threshold`. It closes once the scores have
stayed under the lower `off_threshold` for `min_silence_ms`: the span ends where that quiet run
began (a window back at `threshold` or above cancels the run). A span no longer than
`min_speech_ms` is dropped; a span still open at the end runs to the end of the audio. Finally
every span is widened by `pad_ms` on each side, or by half the pause when the pause between two
spans is shorter than two pads. Spans are never cut for length.

Plain Python on purpose: the helpers in the `silero_vad` package import torch.
"""

from __future__ import annotations

from collections.abc import Sequence

OFF_THRESHOLD_GAP = 0.15  # the default off threshold sits this far under the on threshold
MIN_OFF_THRESHOLD = 0.01


def spans_from_scores(
    scores: Sequence[float],
    *,
    total_samples: int,
    window: int,
    sample_rate: int,
    threshold: float = 0.5,
    off_threshold: float | None = None,
    min_speech_ms: float = 250,
    min_silence_ms: float = 100,
    pad_ms: float = 30,
) -> list[tuple[int, int]]:
    """(start, end) sample spans for `scores`, one score per `window` samples of audio that is
    `total_samples` long at `sample_rate` (see the module docstring for the rules)."""
    if off_threshold is None:
        off_threshold = max(threshold - OFF_THRESHOLD_GAP, MIN_OFF_THRESHOLD)
    min_speech = sample_rate * min_speech_ms / 1000
    min_silence = sample_rate * min_silence_ms / 1000
    found: list[tuple[int, int]] = []
    start: int | None = None  # sample where the open span began
    quiet_from: int | None = None  # sample where the open span's current quiet run began
    for index, score in enumerate(scores):
        at = index * window
        if score >= threshold:
            quiet_from = None
            if start is None:
                start = at
                continue
        if start is None or score >= off_threshold:
            continue
        if quiet_from is None:
            quiet_from = at
        if at - quiet_from >= min_silence:
            if quiet_from - start > min_speech:
                found.append((start, quiet_from))
            start = quiet_from = None
    if start is not None and total_samples - start > min_speech:
        found.append((start, total_samples))
    return _padded(found, sample_rate * pad_ms / 1000, total_samples)


def _padded(spans: list[tuple[int, int]], pad: float, total: int) -> list[tuple[int, int]]:
    """Widen each span by `pad` samples per side (half of a pause shorter than two pads, so
    neighbours meet no further than its middle), kept inside [0, total]."""
    if not spans:
        return []
    starts = [start for start, _ in spans]
    ends = [end for _, end in spans]
    starts[0] = int(max(0, starts[0] - pad))
    for left in range(len(spans) - 1):
        pause = spans[left + 1][0] - spans[left][1]
        grow = pause // 2 if pause < 2 * pad else pad
        ends[left] = int(min(total, ends[left] + grow))
        starts[left + 1] = int(max(0, starts[left + 1] - grow))
    ends[-1] = int(min(total, ends[-1] + pad))
    return list(zip(starts, ends, strict=True))
