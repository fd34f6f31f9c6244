"""A delivered file's head and tail: how much room tone to cut or add at each end so both
lie inside the profile's window (ACX: 0.5-1 s at the head, 1-5 s at the tail)."""

from __future__ import annotations

import numpy as np

from stepedit_core.quality.delivery import Profile

EDGE_GUARD_S = 0.1  # a head/tail this far inside the window is kept as it is


def conform_edges(
    samples: np.ndarray, sample_rate: int, spans: list[tuple[int, int]], profile: Profile
) -> tuple[np.ndarray, list[tuple[int, int]], int, int]:
    """Cut a too-long head / tail to the profile's target; return the frames of room tone to add
    at each end for a too-short one, with the samples and the speech spans after the cut."""
    frames = samples.shape[0]
    head_cut, tail_cut, head_pad, tail_pad = edge_plan(frames, sample_rate, spans, profile)
    samples = samples[head_cut : frames - tail_cut]
    spans = [(a - head_cut, b - head_cut) for a, b in spans]
    return samples, spans, head_pad, tail_pad


def edge_plan(
    frames: int, sample_rate: int, spans: list[tuple[int, int]], profile: Profile
) -> tuple[int, int, int, int]:
    """(head cut, tail cut, head pad, tail pad) in frames: see `conform_edges`."""
    head, tail = spans[0][0], frames - spans[-1][1]
    head_cut, head_pad = _edge_change(head, sample_rate, profile.head_s, profile.head_target_s)
    tail_cut, tail_pad = _edge_change(tail, sample_rate, profile.tail_s, profile.tail_target_s)
    return head_cut, tail_cut, head_pad, tail_pad


def _edge_change(
    edge: int, rate: int, window: tuple[float, float] | None, target: float | None
) -> tuple[int, int]:
    """(frames to cut, frames to add) to bring one edge of `edge` frames into `window`."""
    if window is None:
        return 0, 0
    goal = round((target if target is not None else sum(window) / 2) * rate)
    if edge > round((window[1] - EDGE_GUARD_S) * rate):
        return edge - goal, 0
    if edge < round((window[0] + EDGE_GUARD_S) * rate):
        return 0, goal - edge
    return 0, 0
