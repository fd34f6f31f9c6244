"""QC metrics measured on signals whose true values are known by construction."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from stepedit_core.foundation.audio import Audio
from stepedit_core.quality import qc
from stepedit_core.quality.delivery import check

from signal_fixtures import PAUSE_LAYOUT, speechlike, utterance, white_noise

DEMO = Path(__file__).resolve().parents[1] / "stepedit_core" / "demo"
RATE = 24000


def demo(name: str) -> Audio:
    samples, rate = sf.read(DEMO / f"{name}.flac", dtype="float32", always_2d=True)
    return Audio(samples, rate)


def test_basic_metrics_keep_their_keys() -> None:
    audio = Audio(np.full(RATE, 0.5, dtype=np.float32), RATE)
    assert qc.basic_metrics(audio) == {
        "duration_s": 1.0,
        "peak_dbfs": pytest.approx(-6.02, abs=0.01),
        "rms_dbfs": pytest.approx(-6.02, abs=0.01),
        "clipped_samples": 0,
    }


def test_noise_floor_is_the_quietest_400ms_window() -> None:
    loud = white_noise(RATE * 2, 0.1, seed=1)  # -20 dB
    quiet = white_noise(RATE // 2, 10 ** (-62 / 20), seed=2)  # 0.5 s at -62 dB
    signal = np.concatenate([loud, quiet, loud])
    assert qc.noise_floor_db(signal[:, None], RATE) == pytest.approx(-62.0, abs=0.5)
    # a 0.3 s quiet stretch holds no whole 0.4 s window: ACX Check reads a louder floor
    short = np.concatenate([loud, quiet[: RATE * 3 // 10], loud])
    assert qc.noise_floor_db(short[:, None], RATE) > -40.0
    # a clip shorter than one window is measured whole; digital silence compares as silence
    assert qc.noise_floor_db(quiet[: RATE // 5, None], RATE) == pytest.approx(-62.0, abs=0.7)
    assert qc.noise_floor_db(np.zeros((RATE, 1), np.float32), RATE) < -90.0
    stereo = np.stack([quiet, quiet], axis=1)
    assert qc.noise_floor_db(stereo, RATE) == pytest.approx(-62.0, abs=0.5)


def test_integrated_loudness_of_a_reference_sine() -> None:
    # BS.1770: a 997 Hz sine at 0 dBFS peak reads -3.01 LKFS, so amplitude 0.1 reads -23.01
    rate = 48000
    t = np.arange(rate * 3) / rate
    sine = (0.1 * np.sin(2 * np.pi * 997 * t)).astype(np.float32)
    metrics = qc.measure(Audio(sine, rate), vad=None).metrics
    assert metrics["loudness_lufs"] == pytest.approx(-23.0, abs=0.1)
    assert metrics["rms_dbfs"] == pytest.approx(-23.01, abs=0.02)


def test_loudness_range_of_a_level_step() -> None:
    # EBU Tech 3342: 10 s at -23 LUFS then 10 s 10 dB lower spans 10 LU; a steady tone spans 0
    rate = 16000
    t = np.arange(rate * 20) / rate
    sine = 0.1 * np.sin(2 * np.pi * 997 * t)
    step = (sine * np.where(t < 10, 1.0, 10 ** (-10 / 20))).astype(np.float32)[:, None]
    assert qc.loudness_range_lu(step, rate)[0] == pytest.approx(10.0, abs=0.3)
    assert qc.loudness_range_lu(sine.astype(np.float32)[:, None], rate)[0] == pytest.approx(
        0.0, abs=0.3
    )
    value, note = qc.loudness_range_lu(sine[: rate // 2, None].astype(np.float32), rate)
    assert value is None and "loudness range" in note


def test_true_peak_catches_inter_sample_peaks() -> None:
    # a quarter-rate sine sampled 45 degrees off its crests: every sample is at 0.707 of the
    # waveform's peak, so the sample peak reads 3 dB lower than the true peak
    rate = 48000
    n = np.arange(rate * 2)
    wave = (0.95 * np.sin(2 * np.pi * n / 4 + np.pi / 4)).astype(np.float32)
    metrics = qc.measure(Audio(wave, rate)).metrics
    assert metrics["peak_dbfs"] == pytest.approx(20 * np.log10(0.95 / np.sqrt(2)), abs=0.05)
    assert metrics["true_peak_dbtp"] == pytest.approx(20 * np.log10(0.95), abs=0.2)
    verdict = check(metrics, "r128")
    assert any(reason.startswith("true peak (true_peak_dbtp)") for reason in verdict.reasons)
    assert metrics["peak_dbfs"] < -1.0  # a sample-peak check would have let it through


def test_clipped_samples_are_counted() -> None:
    signal = speechlike(1.0, RATE)
    signal[1000:1010] = 1.0
    signal[2000:2005] = -1.0
    assert qc.measure(Audio(signal, RATE)).metrics["clipped_samples"] == 15


def test_speech_ratio_head_and_tail() -> None:
    signal, _ = utterance(PAUSE_LAYOUT, RATE, floor_db=-55.0)
    metrics = qc.measure(Audio(signal, RATE)).metrics
    total = sum(seconds for _, seconds in PAUSE_LAYOUT)
    assert metrics["speech_ratio"] == pytest.approx(4.4 / total, abs=0.03)
    assert metrics["head_silence_s"] == pytest.approx(0.5, abs=0.05)
    assert metrics["tail_silence_s"] == pytest.approx(0.8, abs=0.05)
    silent = qc.measure(Audio(white_noise(RATE, 1e-3), RATE))
    assert silent.metrics["speech_ratio"] == 0.0
    assert silent.metrics["head_silence_s"] is None
    assert "no speech" in silent.notes["head_silence_s"]


def test_drift_ratio_and_format_against_the_source() -> None:
    source = Audio(speechlike(3.0, RATE, seed=3), RATE)
    shorter = Audio(source.samples[: int(2.9 * RATE)], RATE)
    metrics = qc.measure(shorter, source).metrics
    assert metrics["drift_s"] == pytest.approx(-0.1, abs=1e-4)
    assert metrics["duration_ratio"] == pytest.approx(2.9 / 3.0, abs=1e-4)
    assert metrics["format_matches_source"] == 1
    resampled = Audio(soxr.resample(source.samples, RATE, 16000), 16000)
    metrics = qc.measure(resampled, qc.reference(source)).metrics
    assert metrics["format_matches_source"] == 0
    assert metrics["drift_s"] == pytest.approx(0.0, abs=1e-3)
    assert metrics["ltas_distance_db"] < 0.5  # resampling keeps the spectrum below 7.6 kHz
    alone = qc.measure(shorter)
    assert alone.metrics["drift_s"] is None
    assert alone.notes["drift_s"] == "no source audio to compare with"


def test_long_term_spectrum_distance_sees_timbre_not_level() -> None:
    source = demo("clean_01")
    same_voice_louder = Audio(source.samples * 0.5, source.sample_rate)
    assert qc.measure(same_voice_louder, source).metrics["ltas_distance_db"] < 0.05
    # 1.25x resampling moves the formants up by a quarter: a different-sounding voice
    shifted = soxr.resample(source.samples, source.sample_rate, source.sample_rate * 4 // 5)
    drifted = Audio(shifted, source.sample_rate)
    assert qc.measure(drifted, source).metrics["ltas_distance_db"] > 2.0


def test_heavy_metrics_are_none_with_a_note_when_off() -> None:
    report = qc.measure(Audio(speechlike(1.0, RATE), RATE), heavy=False)
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808", "speaker_similarity"):
        assert report.metrics[key] is None
        assert report.notes[key] == "not measured: heavy QC is off"
    decoded = json.loads(report.to_json())
    assert decoded["metrics"]["dnsmos_ovrl"] is None
    assert set(decoded["notes"]) >= {"dnsmos_ovrl", "speaker_similarity"}


def test_heavy_metrics_say_which_package_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    missing = {"speechmos", "resemblyzer"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    source = Audio(speechlike(1.0, RATE), RATE)
    report = qc.measure(source, source, heavy=True)
    assert report.metrics["dnsmos_ovrl"] is None
    assert report.metrics["speaker_similarity"] is None
    assert "speechmos" in report.notes["dnsmos_ovrl"]
    assert "qc-heavy" in report.notes["dnsmos_ovrl"]
    assert "resemblyzer" in report.notes["speaker_similarity"]


# --- heavy metrics: the qc-heavy extra is part of the test extra --------------------------------


@pytest.fixture(scope="module")
def clean() -> Audio:
    return demo("clean_01")


def test_dnsmos_ranks_clean_speech_over_noisy_speech(clean: Audio) -> None:
    noisy = Audio(clean.samples + white_noise(clean.frames, 0.03, seed=4)[:, None], RATE)
    good = qc.measure(clean, heavy=True).metrics
    bad = qc.measure(noisy, heavy=True).metrics
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"):
        assert 1.0 <= good[key] <= 5.0 and 1.0 <= bad[key] <= 5.0
    assert good["dnsmos_bak"] > bad["dnsmos_bak"] + 1.0  # background noise is what changed
    assert good["dnsmos_ovrl"] > bad["dnsmos_ovrl"] + 0.5


def test_speaker_similarity_drops_when_the_voice_changes(clean: Audio) -> None:
    ref = qc.reference(clean, heavy=True)
    same = qc.measure(Audio(clean.samples * 0.7, RATE), ref, heavy=True).metrics
    shifted = soxr.resample(clean.samples, RATE, RATE * 4 // 5)  # formants up 25 %
    other = qc.measure(Audio(shifted, RATE), ref, heavy=True).metrics
    assert same["speaker_similarity"] > 0.99
    assert other["speaker_similarity"] < same["speaker_similarity"] - 0.1
