"""`loudness=acx` masters into the whole ACX profile: measured with QC, checked with delivery.

Inputs are the shipped demo clips (real speech, 16-bit room tone between -30 and -60 dB) and the
synthetic speech-like signal over a -45 dB noise floor, with heads and tails that are too short,
right, and too long.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import butter, lfilter
from work_items import row_item

from stepedit_core.engines.signal import SignalEngine, mastering
from stepedit_core.engines.signal.mastering import gate_pauses
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.quality import qc
from stepedit_core.quality.delivery import PROFILES, check
from stepedit_core.signal import loudness
from stepedit_core.signal.vad import shared_vad

from signal_fixtures import longest_zero_run, utterance

DEMO = Path(__file__).resolve().parents[1] / "stepedit_core" / "demo"
DEMO_CLIPS = sorted(path.stem for path in DEMO.glob("*.flac"))
RATE = 24000
LAYOUTS = {  # pause / speech / pause / speech / pause, seconds
    "short edges": [0.2, 1.6, 0.7, 1.2, 0.3],
    "long edges": [2.5, 1.4, 1.0, 1.3, 6.0],
    "in window": [0.7, 1.5, 0.4, 1.1, 2.0],
}


def layout_of(name: str) -> list[tuple[str, float]]:
    return [("speech" if i % 2 else "pause", s) for i, s in enumerate(LAYOUTS[name])]


@pytest.fixture(scope="module")
def stage():
    (built,) = SignalEngine().build_stages()
    built.setup()
    return built


def run_chain(stage, samples: np.ndarray, rate: int, edits: str) -> np.ndarray:
    item = row_item(row_index=0, clip_id="c", audio_uri="mem://", edits=parse_chain(edits))
    item.round, item.round_edits = 1, item.edits
    item.audio = Audio(samples, rate)
    stage.process_batch([item])
    assert not item.failed, f"{item.error_code}: {item.error}"
    assert item.output is not None and item.output.sample_rate == rate
    return item.output.samples


def demo(name: str) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(DEMO / f"{name}.flac", dtype="float32", always_2d=True)
    return samples, rate


def synthetic(layout: str, seed: int = 0) -> np.ndarray:
    signal, _ = utterance(layout_of(layout), RATE, floor_db=-45.0, seed=seed)
    return signal[:, None]


def assert_passes_acx(samples: np.ndarray, rate: int, source: np.ndarray | None = None) -> dict:
    metrics = qc.measure(Audio(samples, rate)).metrics
    verdict = check(metrics, "acx")
    assert verdict.passed, verdict.reasons
    assert verdict.warnings == []  # not dead silence either
    assert metrics["noise_floor_db"] == pytest.approx(PROFILES["acx"].noise_floor_target_db, abs=3)
    # no digital silence added (16-bit sources have short runs of exact zeros of their own)
    assert longest_zero_run(samples) <= max(
        2, longest_zero_run(source) if source is not None else 0
    )
    return metrics


def lag(before: np.ndarray, after: np.ndarray) -> int:
    """Where `before` starts inside `after` (cross-correlation peak)."""
    size = before.shape[0] + after.shape[0]
    spectrum = np.fft.rfft(after[:, 0], size) * np.conj(np.fft.rfft(before[:, 0], size))
    peak = int(np.argmax(np.fft.irfft(spectrum, size)))
    return peak if peak < after.shape[0] else peak - size


def speech_gains(before: np.ndarray, after: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """Per speech span of `before`: (least-squares gain in dB, SNR of `after` against that gain
    times `before`, dB), with `after` aligned to `before`."""
    shift = lag(before, after)
    result = []
    for start, end in shared_vad().speech(before, rate, 0.1):
        ref = before[start:end].astype(np.float64).ravel()
        out = after[start + shift : end + shift].astype(np.float64).ravel()
        gain = float(out @ ref / (ref @ ref))
        error = out - gain * ref
        result.append((20 * np.log10(gain), 10 * np.log10(gain**2 * (ref @ ref) / (error @ error))))
    return result


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_acx_mastering_passes_acx_on_synthetic_speech(stage, layout: str) -> None:
    source = synthetic(layout)
    out = run_chain(stage, source, RATE, "loudness=acx")
    before = qc.measure(Audio(source, RATE)).metrics
    assert before["noise_floor_db"] > -50.0  # the input's floor fails ACX
    metrics = assert_passes_acx(out, RATE)
    if layout == "in window":  # nothing to add or cut: only the level and the floor change
        assert out.shape[0] == source.shape[0]
        assert metrics["head_silence_s"] == pytest.approx(before["head_silence_s"], abs=0.05)


@pytest.mark.parametrize("name", DEMO_CLIPS)
def test_acx_mastering_passes_acx_on_demo_speech(stage, name: str) -> None:
    samples, rate = demo(name)
    out = run_chain(stage, samples, rate, "loudness=acx")
    assert_passes_acx(out, rate, samples)


@pytest.mark.parametrize("name", ["clean_01", "noisy_02", "pauses_02", "synthetic"])
def test_acx_mastering_changes_speech_by_gain_only(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """With the true-peak limiter (tested on its own) taken out, every speech span of the
    output is the input's span times one common gain: no gate, fade or room tone reaches it."""
    monkeypatch.setattr(loudness, "limit", lambda samples, rate, ceiling: samples)
    samples, rate = demo(name) if name != "synthetic" else (synthetic("short edges"), RATE)
    out = mastering.normalize(samples, rate, "acx")
    gains = speech_gains(samples, out, rate)
    assert gains
    spread = max(g for g, _ in gains) - min(g for g, _ in gains)
    assert spread < 0.01
    assert min(snr for _, snr in gains) > 50.0
    # and the pauses did change: the floor went from the input's to the ACX target
    assert qc.noise_floor_db(out, rate) == pytest.approx(-66.0, abs=3.0)


def test_vad_then_acx_passes_acx(stage) -> None:
    source = synthetic("long edges", seed=3)
    out = run_chain(stage, source, RATE, "vad;loudness=acx")
    metrics = assert_passes_acx(out, RATE)
    assert metrics["duration_s"] < source.shape[0] / RATE - 5.0  # vad did shorten it
    samples, rate = demo("pauses_01")
    assert_passes_acx(run_chain(stage, samples, rate, "vad;loudness=acx"), rate, samples)


def test_vad_alone_keeps_an_acx_head_and_tail(stage) -> None:
    source = synthetic("long edges", seed=4)
    out = run_chain(stage, source, RATE, "vad")
    metrics = qc.measure(Audio(out, RATE)).metrics
    assert 0.5 <= metrics["head_silence_s"] <= 1.0
    assert 1.0 <= metrics["tail_silence_s"] <= 5.0


def test_added_room_tone_has_the_clip_s_own_colour() -> None:
    """Head and tail filled in are shaped like the clip's pauses (here: low rumble), not white
    or digital silence."""
    signal, _ = utterance(layout_of("short edges"), RATE, floor_db=-200.0, seed=5)
    b, a = butter(2, 300 / (RATE / 2))
    rumble = lfilter(b, a, np.random.default_rng(9).standard_normal(signal.shape[0]))
    rumble *= 10 ** (-45 / 20) / np.sqrt(np.mean(rumble**2))
    source = (signal + rumble).astype(np.float32)[:, None]
    out = mastering.normalize(source, RATE, "acx")
    metrics = assert_passes_acx(out, RATE)
    added = int((metrics["head_silence_s"] - 0.2) * RATE)  # the head had 0.2 s of its own
    head = out[: added - RATE // 20, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(head)) ** 2
    freqs = np.fft.rfftfreq(head.shape[0], 1 / RATE)
    assert spectrum[freqs < 600].sum() / spectrum.sum() > 0.9  # white noise: 5 %
    assert 20 * np.log10(np.sqrt(np.mean(head**2))) == pytest.approx(-66.0, abs=2.0)


def test_dead_silent_pauses_get_a_room_tone_bed() -> None:
    signal, _ = utterance(layout_of("in window"), RATE, floor_db=-200.0, seed=6)
    out = mastering.normalize(signal[:, None], RATE, "acx")
    assert qc.noise_floor_db(signal[:, None], RATE) < -90.0
    assert_passes_acx(out, RATE)


def test_stereo_8k_keeps_one_gain_for_both_channels() -> None:
    rate = 8000
    mono, _ = utterance(layout_of("short edges"), rate, floor_db=-45.0, seed=7)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    out = mastering.normalize(stereo, rate, "acx")
    assert out.shape[1] == 2
    assert_passes_acx(out, rate)
    speech = np.abs(out[:, 0]) > 0.01
    np.testing.assert_allclose(out[speech, 1], 0.5 * out[speech, 0], rtol=1e-4, atol=1e-6)


def test_gate_leaves_speech_and_margins_bit_exact() -> None:
    signal = synthetic("in window")
    spans = shared_vad().speech(signal, RATE, 0.1)
    gated = gate_pauses(signal, RATE, spans, -80.0)
    margin = round(0.05 * RATE)
    for start, end in spans:
        lo, hi = max(0, start - margin), min(signal.shape[0], end + margin)
        np.testing.assert_array_equal(gated[lo:hi], signal[lo:hi])
    pause = slice(spans[0][1] + margin + round(0.05 * RATE), spans[1][0] - margin - 1200)
    level = 20 * np.log10(np.sqrt(np.mean(gated[pause] ** 2)))
    assert level == pytest.approx(-80.0, abs=2.0)
    assert np.all(gated[pause] != 0.0)
