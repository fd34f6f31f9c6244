"""Synthetic test signals with known properties for the signal engine's tests and benchmark.

Everything is generated with numpy/scipy from a seed: harmonic tones with a known F0, noise at a
known SNR, and a speech-like signal (a glottal pulse train through moving vowel formants, with
syllable rhythm and fricative bursts) that silero-vad recognises as speech.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, lfilter

# (F1, F2, F3) of a few English vowels, Hz
VOWEL_FORMANTS = np.array(
    [
        (730, 1090, 2440),
        (270, 2290, 3010),
        (530, 1840, 2480),
        (570, 840, 2410),
        (300, 870, 2240),
        (660, 1720, 2410),
        (490, 1350, 1690),
    ],
    dtype=np.float64,
)


def harmonic(f0: float, seconds: float, rate: int, harmonics: int = 8, peak: float = 0.5):
    """A steady harmonic tone (1/k amplitudes) with a known fundamental, float32 (frames,)."""
    t = np.arange(round(seconds * rate)) / rate
    tone = sum(
        np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, harmonics + 1) if f0 * k < rate / 2
    )
    tone = np.asarray(tone, dtype=np.float64)
    return (peak * tone / np.abs(tone).max()).astype(np.float32)


def speechlike(
    seconds: float, rate: int, f0: float = 120.0, seed: int = 0, syllable: float = 0.15
) -> np.ndarray:
    """Voiced speech-like signal, peak 0.5, float32 (frames,)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    count = int(np.ceil(seconds / syllable)) + 1
    pitch = f0 * (1.1 - 0.2 * t / max(seconds, 1e-3))
    pitch *= 1 + 0.12 * np.sin(2 * np.pi * 2.1 * t + rng.uniform(0, 6))
    pulses = np.diff(np.floor(np.cumsum(pitch / rate)), prepend=0.0)
    source = lfilter([1.0], [1.0, -0.97], pulses) + 0.02 * rng.standard_normal(n)
    vowels = rng.integers(len(VOWEL_FORMANTS), size=count)
    knots = (np.arange(count) + 0.5) * syllable
    tracks = [np.interp(t, knots, VOWEL_FORMANTS[vowels, j]) for j in range(3)]
    voiced = np.zeros(n)
    states = [np.zeros(2) for _ in range(3)]
    block = max(1, rate // 250)
    for s in range(0, n, block):
        e = min(n, s + block)
        for j, gain in enumerate((1.0, 0.5, 0.25)):
            freq = min(tracks[j][s], 0.45 * rate)
            r = np.exp(-np.pi * (60 + 0.06 * freq) / rate)
            a = [1.0, -2 * r * np.cos(2 * np.pi * freq / rate), r * r]
            y, states[j] = lfilter([1 - r], a, source[s:e], zi=states[j])
            voiced[s:e] += gain * y
    phase = (t / syllable) % 1.0
    voiced = voiced / (np.abs(voiced).max() + 1e-12) * np.sin(np.pi * phase)
    b, a = butter(2, min(3500.0, 0.4 * rate) / (rate / 2), "high")
    hiss = lfilter(b, a, rng.standard_normal(n))
    index = np.minimum((t / syllable).astype(int), count - 1)
    burst = np.exp(-(((phase - 0.02) / 0.04) ** 2)) * (rng.random(count)[index] > 0.4)
    out = voiced + 0.3 * hiss / np.abs(hiss).max() * burst
    out *= np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)
    return (0.5 * out / (np.abs(out).max() + 1e-12)).astype(np.float32)


# pauses 0.5 (lead), 1.0, 0.2, 0.6, 0.8 (tail) around four stretches of speech: 4.2 s of speech
PAUSE_LAYOUT = [
    ("pause", 0.5),
    ("speech", 1.2),
    ("pause", 1.0),
    ("speech", 1.0),
    ("pause", 0.2),
    ("speech", 0.9),
    ("pause", 0.6),
    ("speech", 1.1),
    ("pause", 0.8),
]


def utterance(
    layout: list[tuple[str, float]], rate: int, floor_db: float = -60.0, seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speech and pauses laid out as [("pause", 0.5), ("speech", 1.2), ...] over a noise floor
    (room tone, `floor_db` dBFS RMS). Returns the signal and the speech spans in seconds."""
    rng = np.random.default_rng(seed + 1000)
    parts, spans, now = [], [], 0.0
    for index, (kind, seconds) in enumerate(layout):
        if kind == "speech":
            parts.append(speechlike(seconds, rate, seed=seed + index))
            spans.append((now, now + seconds))
        else:
            parts.append(np.zeros(round(seconds * rate), dtype=np.float32))
        now += seconds
    signal = np.concatenate(parts)
    signal += (10 ** (floor_db / 20) * rng.standard_normal(signal.shape[0])).astype(np.float32)
    return signal.astype(np.float32), spans


def white_noise(frames: int, rms: float, seed: int = 0) -> np.ndarray:
    return (rms * np.random.default_rng(seed).standard_normal(frames)).astype(np.float32)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def snr_db(clean: np.ndarray, estimate: np.ndarray) -> float:
    """SNR of `estimate` against `clean`, after the least-squares gain (scale-invariant)."""
    clean = clean.astype(np.float64).ravel()
    estimate = estimate.astype(np.float64).ravel()
    gain = float(np.dot(estimate, clean) / np.dot(clean, clean))
    error = estimate - gain * clean
    return float(10 * np.log10(np.sum((gain * clean) ** 2) / np.sum(error**2)))


def estimate_f0(x: np.ndarray, rate: int, low: float = 60.0, high: float = 500.0) -> float:
    """Fundamental by autocorrelation with parabolic peak interpolation."""
    x = x.astype(np.float64) - x.mean()
    spectrum = np.fft.rfft(x, 2 * x.shape[0])
    corr = np.fft.irfft(np.abs(spectrum) ** 2)[: x.shape[0]]
    lo, hi = int(rate / high), int(rate / low)
    lag = lo + int(np.argmax(corr[lo:hi]))
    a, b, c = corr[lag - 1], corr[lag], corr[lag + 1]
    shift = 0.5 * (a - c) / (a - 2 * b + c) if (a - 2 * b + c) != 0 else 0.0
    return rate / (lag + shift)


def longest_zero_run(x: np.ndarray) -> int:
    """Longest run of frames where every channel is exactly 0.0."""
    zero = np.all(x.reshape(x.shape[0], -1) == 0.0, axis=1)
    best = run = 0
    for flag in zero:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def active_spans(x: np.ndarray, rate: int, threshold_db: float = -40.0, frame_s: float = 0.01):
    """Spans (seconds) where 10 ms frame RMS is above threshold_db: an energy 'truth' VAD."""
    mono = x.reshape(x.shape[0], -1).mean(axis=1)
    size = max(1, round(frame_s * rate))
    frames = mono.shape[0] // size
    levels = 20 * np.log10(
        np.sqrt(np.mean(mono[: frames * size].reshape(frames, size) ** 2, axis=1)) + 1e-12
    )
    on = levels > threshold_db
    spans, start = [], None
    for i, flag in enumerate(on):
        if flag and start is None:
            start = i
        if not flag and start is not None:
            spans.append((start * frame_s, i * frame_s))
            start = None
    if start is not None:
        spans.append((start * frame_s, frames * frame_s))
    return spans


def narration(
    seconds: float,
    rate: int,
    drift_db: float = 8.0,
    crest_db: float = 28.0,
    floor_db: float = -50.0,
    seed: int = 0,
) -> np.ndarray:
    """Dynamic narration, float32 (frames, 1): sentences of speech-like signal with pauses,
    a level that drifts by `drift_db` (quiet, loud, quiet again: a raised-cosine swell over the
    clip), and short plosive-like bursts that put the whole clip's crest factor (sample peak over
    RMS) near `crest_db`, over a room tone at `floor_db`."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(round(0.6 * rate), np.float32)]
    total = parts[0].shape[0]
    while total < seconds * rate:
        sentence = speechlike(rng.uniform(1.5, 3.5), rate, rng.uniform(100, 160), seed + len(parts))
        pause = np.zeros(round(rng.uniform(0.35, 0.9) * rate), np.float32)
        parts += [sentence, pause]
        total += sentence.shape[0] + pause.shape[0]
    x = np.concatenate(parts)[: round(seconds * rate)].astype(np.float64)
    t = np.arange(x.shape[0]) / x.shape[0]
    x *= 10 ** (drift_db * (0.5 - 0.5 * np.cos(2 * np.pi * t) - 0.5) / 20)
    peak = np.sqrt(np.mean(x**2)) * 10 ** (crest_db / 20)
    hits = rng.choice(np.flatnonzero(np.abs(x) > 1e-3), size=max(3, int(seconds / 4)))
    size = round(0.004 * rate)
    burst = np.hanning(size) * np.sin(2 * np.pi * np.arange(size) * 900 / rate)
    for at in hits:
        span = x[at : at + size]
        span += burst[: span.shape[0]] * peak * rng.uniform(0.5, 1.0)
    first = x[hits[0] : hits[0] + size]
    first *= peak / np.abs(first).max()  # one burst sets the crest factor
    x += 10 ** (floor_db / 20) * rng.standard_normal(x.shape[0])
    return (0.9 * x / np.abs(x).max()).astype(np.float32)[:, None]
