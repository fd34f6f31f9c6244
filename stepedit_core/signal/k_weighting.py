"""BS.1770's K-weighting filter: a high shelf (+4 dB above about 1.5 kHz) then a 38 Hz high pass,
two biquads designed for the stream's sample rate and run with their state carried from block to
block.

The biquads are the RBJ "Audio EQ Cookbook" designs with the parameters of pyloudnorm's
'K-weighting' class, so loudness matches pyloudnorm's. They run in scipy's compiled linear filter,
loaded on its own: importing `scipy.signal` costs about 0.6 s of CPU (window functions, spectral
analysis, filter design...) that every process measuring loudness would pay for one function, on
the path of a run's first clip. Should this scipy lay that filter out differently, or should it
not pass a check against the recurrence written out here, `scipy.signal.lfilter` is used instead.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

# (shape, gain dB, Q, corner Hz): pyloudnorm's 'K-weighting' stages, in order
STAGES = (("high_shelf", 4.0, 1.0 / math.sqrt(2.0), 1500.0), ("high_pass", 0.0, 0.5, 38.0))

LinearFilter = Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Biquad:
    """y[n] = b0 x[n] + b1 x[n-1] + b2 x[n-2] - a1 y[n-1] - a2 y[n-2] (a0 normalised to 1)."""

    b: np.ndarray
    a: np.ndarray


def biquad(shape: str, gain_db: float, q: float, corner_hz: float, rate: int) -> Biquad:
    """An RBJ cookbook biquad: `high_shelf` or `high_pass`."""
    big_a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * corner_hz / rate
    cos_w0 = math.cos(w0)
    alpha = math.sin(w0) / (2.0 * q)
    if shape == "high_shelf":
        root = 2.0 * math.sqrt(big_a) * alpha
        b = (
            big_a * ((big_a + 1) + (big_a - 1) * cos_w0 + root),
            -2.0 * big_a * ((big_a - 1) + (big_a + 1) * cos_w0),
            big_a * ((big_a + 1) + (big_a - 1) * cos_w0 - root),
        )
        a = (
            (big_a + 1) - (big_a - 1) * cos_w0 + root,
            2.0 * ((big_a - 1) - (big_a + 1) * cos_w0),
            (big_a + 1) - (big_a - 1) * cos_w0 - root,
        )
    elif shape == "high_pass":
        b = ((1 + cos_w0) / 2.0, -(1 + cos_w0), (1 + cos_w0) / 2.0)
        a = (1 + alpha, -2.0 * cos_w0, 1 - alpha)
    else:
        raise ValueError(f"unknown biquad shape {shape!r}: expected high_shelf or high_pass")
    return Biquad(np.array(b) / a[0], np.array(a) / a[0])


def k_weighting(rate: int) -> list[Biquad]:
    """The K-weighting stages for `rate`, in the order they apply."""
    return [biquad(*stage, rate) for stage in STAGES]


class KWeighting:
    """K-weights one channel's blocks in order, from rest (zero state), as one long signal."""

    def __init__(self, rate: int) -> None:
        self.stages = k_weighting(rate)
        self._state = [np.zeros(2) for _ in self.stages]
        self._filter = linear_filter()

    def feed(self, block: np.ndarray) -> np.ndarray:
        signal = np.ascontiguousarray(block, dtype=np.float64)
        for i, stage in enumerate(self.stages):
            signal, self._state[i] = self._filter(stage.b, stage.a, signal, -1, self._state[i])
        return signal


def recurrence(stage: Biquad, x: np.ndarray) -> np.ndarray:
    """The biquad from rest, sample by sample in Python: the reference the compiled filter is
    checked against (short signals only)."""
    b0, b1, b2 = (float(v) for v in stage.b)
    _, a1, a2 = (float(v) for v in stage.a)
    y = np.zeros(len(x))
    x1 = x2 = y1 = y2 = 0.0
    for n, xn in enumerate(float(v) for v in x):
        y[n] = b0 * xn + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2
        x2, x1, y2, y1 = x1, xn, y1, y[n]
    return y


@lru_cache(maxsize=1)
def linear_filter() -> LinearFilter:
    """`f(b, a, x, axis, zi) -> (y, zf)` as `scipy.signal.lfilter` with `zi`: scipy's compiled
    filter without the rest of scipy.signal where that works, else lfilter itself."""
    return choose(None if "scipy.signal" in sys.modules else _load_compiled())


def choose(compiled: LinearFilter | None) -> LinearFilter:
    """`compiled` if it computes the biquads right, else `scipy.signal.lfilter`."""
    if compiled is not None and _agrees(compiled):
        return compiled
    from scipy.signal import lfilter

    return lfilter


def _load_compiled() -> LinearFilter | None:
    """scipy.signal's `_sigtools._linear_filter` (what lfilter calls for real arrays), loaded
    from its extension module alone; None when it is not where this expects it."""
    try:
        spec = importlib.util.find_spec("scipy")
        if spec is None or not spec.submodule_search_locations:
            return None
        folder = Path(next(iter(spec.submodule_search_locations))) / "signal"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_sigtools{suffix}"
            if path.is_file():
                break
        else:
            return None
        loader = importlib.machinery.ExtensionFileLoader("scipy.signal._sigtools", str(path))
        module_spec = importlib.util.spec_from_loader(loader.name, loader)
        if module_spec is None:
            return None
        module = importlib.util.module_from_spec(module_spec)
        loader.exec_module(module)
        return getattr(module, "_linear_filter", None)
    except (ImportError, OSError):
        return None


def _agrees(compiled: LinearFilter) -> bool:
    """Whether `compiled` gives the recurrence's output, also when a signal is cut in two and
    the state carried over (a changed calling convention fails here, not in a measurement)."""
    stage = k_weighting(48000)[0]
    x = np.random.default_rng(0).standard_normal(64)
    want = recurrence(stage, x)
    try:
        head, state = compiled(stage.b, stage.a, x[:23], -1, np.zeros(2))
        tail, _ = compiled(stage.b, stage.a, x[23:], -1, state)
    except (TypeError, ValueError):
        return False
    got = np.concatenate([head, tail])
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-9, atol=1e-12))
