"""The CPU signal engine: measured outcomes of speed, denoise, vad and loudness edits.

All audio is synthesised here (see signal_fixtures.py) so the expected result is known: a
harmonic tone's F0, noise mixed at a known SNR, speech-like bursts separated by known pauses.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
from scipy.signal import resample_poly
from work_items import row_item, run_stages

from stepedit_core.engines import EngineNotReady, EngineOptions, make_engine
from stepedit_core.engines.signal import SignalEditStage, SignalEngine, denoise
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import (
    EMOTIONS,
    LOUDNESS_PROFILES,
    SPEED_FACTORS,
    EditSpec,
    parse_chain,
    parse_edit,
)
from stepedit_core.foundation.stages import Resources, WorkItem
from stepedit_core.lifecycle.rounds import build_stages
from stepedit_core.quality.qc import basic_metrics
from stepedit_core.signal.vad import SileroVad

from signal_fixtures import (
    PAUSE_LAYOUT,
    active_spans,
    estimate_f0,
    harmonic,
    longest_zero_run,
    rms,
    snr_db,
    speechlike,
    utterance,
    white_noise,
)

DEMO = Path(__file__).resolve().parents[1] / "stepedit_core" / "demo"


@pytest.fixture(scope="module")
def stage() -> SignalEditStage:
    stages = SignalEngine().build_stages()
    assert len(stages) == 1
    stages[0].setup()
    return stages[0]


def make_item(samples: np.ndarray, rate: int, edits: str, index: int = 0) -> WorkItem:
    item = row_item(
        row_index=index, clip_id=f"clip{index}", audio_uri="mem://", edits=parse_chain(edits)
    )
    item.round, item.round_edits = 1, item.edits
    item.audio = Audio(samples, rate)
    return item


def run_one(stage: SignalEditStage, samples: np.ndarray, rate: int, edits: str) -> Audio:
    item = make_item(samples, rate, edits)
    stage.process_batch([item])
    assert not item.failed, f"{item.error_code}: {item.error}"
    assert item.output is not None
    assert item.output.sample_rate == rate
    assert item.output.channels == item.audio.channels
    assert item.output.samples.dtype == np.float32
    assert "signal_edit" in item.timings
    return item.output


def true_peak_db(samples: np.ndarray) -> float:
    """True peak by 4x polyphase oversampling (scipy), independent of the engine's soxr one."""
    return float(20 * np.log10(np.abs(resample_poly(samples, 4, 1, axis=0)).max()))


def lufs(samples: np.ndarray, rate: int) -> float:
    return float(pyloudnorm.Meter(rate).integrated_loudness(samples.astype(np.float64)))


# --- the engine's contract -------------------------------------------------------------------


def test_engine_describes_itself_and_is_registered() -> None:
    engine = make_engine("signal")
    assert isinstance(engine, SignalEngine)
    assert engine.name == "signal" and engine.version
    assert set(engine.capabilities()) == {"speed", "denoise", "vad", "loudness", "fillers"}
    info = engine.describe()
    assert info["stages"] == [
        {"name": "signal_edit", "batch_size": 16, "cpus": 1.0, "gpus": 0.0, "memory_mb": 0}
    ]
    assert not engine.reads_text
    # no transcript needed, even for speed: no ItemFailure
    engine.check_row(parse_chain("speed=faster;vad;denoise"), None, None)


@pytest.mark.parametrize(
    "edit",
    ["speed=faster", "speed=slower", "speed=more faster", "speed=more slower", "speed=0.25",
     "speed=4", "speed=1.1", "denoise", "vad", "vad=0.5", "loudness=ebu", "loudness=acx",
     "loudness=netflix", "loudness=-16", "loudness=-70", "fillers", "fillers=um,uh",
     "fillers=list"],
)  # fmt: skip
def test_supports_signal_edits(edit: str) -> None:
    assert SignalEngine().supports(parse_edit(edit))


@pytest.mark.parametrize(
    "spec",
    [parse_edit(f"emotion={EMOTIONS[0]}"), parse_edit("style=whisper"),
     parse_edit("paralinguistic"), parse_edit("clone"), EditSpec("speed", "9"),
     EditSpec("speed", None), EditSpec("loudness", "loud"), EditSpec("vad", "10"),
     EditSpec("denoise", "strong"), EditSpec("tempo", "2"), EditSpec("fillers", "like")],
)  # fmt: skip
def test_does_not_support_other_edits(spec: EditSpec) -> None:
    assert not SignalEngine().supports(spec)


def test_check_ready_names_missing_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = SignalEngine()
    engine.check_ready()  # everything is installed here
    real = importlib.util.find_spec
    gone = {"python_stretch", "pyrnnoise", "noisereduce"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a)
    )
    with pytest.raises(EngineNotReady, match=r"python_stretch, pyrnnoise \(or noisereduce\)"):
        engine.check_ready()


def test_options_reach_the_stage() -> None:
    options = EngineOptions(vad_max_pause=0.5, batch_sizes={"signal_edit": 4})
    (stage,) = SignalEngine(options).build_stages()
    assert stage.vad_max_pause == 0.5 and stage.batch_size == 4
    assert stage.resources == Resources(cpus=1.0)


def test_stage_pickles_before_and_after_setup_and_setup_is_idempotent() -> None:
    (stage,) = SignalEngine().build_stages()
    fresh = pickle.loads(pickle.dumps(stage))  # what Ray does before setup
    assert fresh._vad is None and fresh._denoiser is None
    fresh.setup()
    vad, denoiser = fresh._vad, fresh._denoiser
    fresh.setup()
    assert fresh._vad is vad and fresh._denoiser is denoiser
    assert fresh.denoise_backend == "rnnoise"
    again = pickle.loads(pickle.dumps(fresh))  # loaded models are dropped, not pickled
    assert again._vad is None and again.vad_max_pause == stage.vad_max_pause


# --- speed -------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", [*SPEED_FACTORS, "0.5", "2", "1.1"])
def test_speed_changes_duration_and_keeps_pitch(stage: SignalEditStage, option: str) -> None:
    rate, f0 = 24000, 150.0
    tone = harmonic(f0, 2.0, rate)
    factor = parse_edit(f"speed={option}").speed_factor
    out = run_one(stage, tone, rate, f"speed={option}")
    ratio = out.frames / tone.shape[0]
    assert ratio == pytest.approx(1 / factor, rel=0.01)
    middle = out.samples[out.frames // 4 : 3 * out.frames // 4, 0]
    assert estimate_f0(middle, rate) == pytest.approx(f0, rel=0.02)


def test_speed_8k_stereo_keeps_each_channel_pitch(stage: SignalEditStage) -> None:
    rate = 8000
    stereo = np.stack([harmonic(150.0, 1.5, rate), harmonic(220.0, 1.5, rate)], axis=1)
    out = run_one(stage, stereo, rate, "speed=0.8")
    assert out.frames == round(stereo.shape[0] / 0.8)
    middle = slice(out.frames // 4, 3 * out.frames // 4)
    assert estimate_f0(out.samples[middle, 0], rate) == pytest.approx(150.0, rel=0.02)
    assert estimate_f0(out.samples[middle, 1], rate) == pytest.approx(220.0, rel=0.02)


@pytest.mark.parametrize("frames", [1, 7, 120])
def test_speed_on_tiny_clips(stage: SignalEditStage, frames: int) -> None:
    clip = harmonic(200.0, 0.01, 24000)[:frames]
    out = run_one(stage, clip, 24000, "speed=4")
    assert out.frames == max(1, round(frames / 4))


# --- denoise -----------------------------------------------------------------------------------


def am_tone(seconds: float, rate: int) -> np.ndarray:
    """A 150 Hz harmonic tone, amplitude-modulated at 3 Hz (RNNoise keeps it as voice)."""
    t = np.arange(round(seconds * rate)) / rate
    return (harmonic(150.0, seconds, rate) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2).astype(
        np.float32
    )


@pytest.mark.parametrize("rate", [24000, 8000])
def test_denoise_raises_snr(stage: SignalEditStage, rate: int) -> None:
    clean = am_tone(3.0, rate)
    noisy = clean + white_noise(clean.shape[0], rms(clean) * 10 ** (-5 / 20), seed=2)
    before = snr_db(clean, noisy)
    out = run_one(stage, noisy, rate, "denoise")
    after = snr_db(clean, out.samples[:, 0])
    assert out.frames == noisy.shape[0]
    assert before == pytest.approx(5.0, abs=0.2)
    assert after - before >= 4.0, f"SNR {before:.2f} -> {after:.2f} dB"


def test_denoise_stereo_channels_stay_apart(stage: SignalEditStage) -> None:
    rate = 16000
    clean = am_tone(2.0, rate)
    noisy = np.stack(
        [clean + white_noise(clean.shape[0], 0.05, seed=3), white_noise(clean.shape[0], 0.05)],
        axis=1,
    )
    out = run_one(stage, noisy, rate, "denoise")
    assert out.samples.shape == noisy.shape
    assert snr_db(clean, out.samples[:, 0]) > snr_db(clean, noisy[:, 0]) + 3
    # channel 1 holds only noise: strongly attenuated, yet never digital silence
    level = 20 * np.log10(rms(out.samples[rate // 2 :, 1]) / 0.05)
    assert -40.0 < level < -20.0
    assert longest_zero_run(out.samples) == 0


def test_denoise_tiny_clip(stage: SignalEditStage) -> None:
    out = run_one(stage, white_noise(30, 0.1), 24000, "denoise")
    assert out.frames == 30


def test_denoise_falls_back_to_spectral_gating(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("librnnoise.so: cannot open shared object file")

    monkeypatch.setattr(denoise, "RNNoiseDenoiser", broken)
    fallback = denoise.load_denoiser()
    assert fallback.backend == "noisereduce"
    rate = 16000
    clean = am_tone(2.0, rate)
    noisy = np.stack([clean + white_noise(clean.shape[0], 0.05, seed=4)] * 2, axis=1)
    out = fallback(noisy, rate)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert snr_db(clean, out[:, 0]) > snr_db(clean, noisy[:, 0]) + 0.5  # measured: +1.0 dB


@pytest.mark.skipif(not (DEMO / "noisy_01.flac").exists(), reason="demo clips not built")
def test_denoise_on_demo_speech(stage: SignalEditStage) -> None:
    clean, rate = sf.read(DEMO / "clean_01.flac", dtype="float32")
    noisy, _ = sf.read(DEMO / "noisy_01.flac", dtype="float32")
    out = run_one(stage, noisy, rate, "denoise")
    assert snr_db(clean, out.samples[:, 0]) - snr_db(clean, noisy) >= 2.0


# --- vad ---------------------------------------------------------------------------------------


def test_silero_detects_the_synthetic_speech(stage: SignalEditStage) -> None:
    rate = 24000
    signal, truth = utterance(PAUSE_LAYOUT, rate)
    found = stage._vad.speech(signal[:, None], rate, 0.3)
    assert isinstance(stage._vad, SileroVad)
    # the 0.2 s pause is shorter than silero's minimum silence: two words in one span
    expected = [truth[0], truth[1][0:1] + truth[2][1:2], truth[3]]
    assert len(found) == len(expected)
    for (start, end), (true_start, true_end) in zip(found, expected, strict=True):
        assert start / rate == pytest.approx(true_start, abs=0.05)
        assert end / rate == pytest.approx(true_end, abs=0.05)


def test_vad_shortens_long_pauses_and_keeps_speech(stage: SignalEditStage) -> None:
    rate = 24000
    signal, truth = utterance(PAUSE_LAYOUT, rate)
    out = run_one(stage, signal, rate, "vad")
    inner = [seconds for kind, seconds in PAUSE_LAYOUT[1:-1] if kind == "pause"]
    removed = sum(max(0.0, p - 0.3) for p in inner)  # 0.7 + 0.3 = 1.0 s; head/tail are kept
    assert signal.shape[0] / rate - out.duration == pytest.approx(removed, abs=0.08)
    assert longest_zero_run(out.samples) == 0
    # speech kept: as much active (above -45 dBFS) time out as in
    spans_in = active_spans(signal, rate, -45.0)
    spans_out = active_spans(out.samples, rate, -45.0)
    active_in = sum(b - a for a, b in spans_in)
    active_out = sum(b - a for a, b in spans_out)
    assert active_out == pytest.approx(active_in, abs=0.03)
    # the pauses between words, measured on the output: long ones are now ~0.3 s
    gaps = [b[0] - a[1] for a, b in zip(spans_out, spans_out[1:], strict=False)]
    long_gaps = sorted(g for g in gaps if g > 0.1)
    assert len(long_gaps) == 3
    assert long_gaps[0] == pytest.approx(0.2, abs=0.04)  # the 0.2 s pause is left alone
    assert long_gaps[1] == pytest.approx(0.3, abs=0.05)
    assert long_gaps[2] == pytest.approx(0.3, abs=0.05)
    # leading (0.5 s) and trailing (0.8 s) silence are inside the 0.75 s / 1.5 s delivery
    # window, so they are kept whole
    assert spans_out[0][0] == pytest.approx(0.5, abs=0.05)
    assert out.duration - spans_out[-1][1] == pytest.approx(0.8, abs=0.05)
    assert truth  # spans of speech in the input are known (see the detection test)


def test_vad_option_8k_stereo_same_cut_on_all_channels(stage: SignalEditStage) -> None:
    rate = 8000
    mono, _ = utterance(PAUSE_LAYOUT, rate, seed=7)
    stereo = np.stack([mono, 0.5 * mono], axis=1)
    out = run_one(stage, stereo, rate, "vad=0.5")
    # pauses 1.0, 0.2, 0.6 between words -> at most 0.5 s: 0.5 + 0.1 s removed; the 0.5 s
    # head and 0.8 s tail are inside the delivery window and stay
    assert mono.shape[0] / rate - out.duration == pytest.approx(0.6, abs=0.08)
    np.testing.assert_allclose(out.samples[:, 1], 0.5 * out.samples[:, 0], atol=1e-6)


def test_vad_cuts_long_head_and_tail_to_the_delivery_window(stage: SignalEditStage) -> None:
    rate = 16000
    layout = [("pause", 2.5), ("speech", 1.2), ("pause", 1.0), ("speech", 1.0), ("pause", 4.0)]
    signal, _ = utterance(layout, rate, floor_db=-50.0, seed=5)
    out = run_one(stage, signal, rate, "vad")
    spans_out = active_spans(out.samples, rate, -45.0)
    # the head is cut to 0.75 s and the tail to 1.5 s (ACX: 0.5-1 s, 1-5 s), not to 0.3 s
    assert spans_out[0][0] == pytest.approx(0.75, abs=0.06)
    assert out.duration - spans_out[-1][1] == pytest.approx(1.5, abs=0.06)
    removed = (2.5 - 0.75) + (1.0 - 0.3) + (4.0 - 1.5)
    assert signal.shape[0] / rate - out.duration == pytest.approx(removed, abs=0.1)
    assert longest_zero_run(out.samples) == 0


def test_vad_without_speech_fails_the_item(stage: SignalEditStage) -> None:
    item = make_item(white_noise(24000, 10 ** (-60 / 20)), 24000, "vad")
    stage.process_batch([item])
    assert item.error_code == "no_speech"
    assert item.output is None


@pytest.mark.skipif(not (DEMO / "pauses_01.flac").exists(), reason="demo clips not built")
def test_vad_on_demo_speech(stage: SignalEditStage) -> None:
    samples, rate = sf.read(DEMO / "pauses_01.flac", dtype="float32")
    out = run_one(stage, samples, rate, "vad")
    # one 1.2 s pause between two phrases -> 0.3 s; the 0.25 s room tone edges stay
    assert samples.shape[0] / rate - out.duration == pytest.approx(0.9, abs=0.12)
    # 16-bit room tone has a few exact zeros of its own; the cut adds no longer run
    assert longest_zero_run(out.samples) <= longest_zero_run(samples[:, None])


# --- loudness ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_24k() -> np.ndarray:
    signal, _ = utterance(
        [("pause", 0.3), ("speech", 2.0), ("pause", 0.5), ("speech", 1.5), ("pause", 0.3)], 24000
    )
    return (0.3 * signal).astype(np.float32)


@pytest.mark.parametrize("option", ["ebu", "ebu-r128", "atsc", "netflix", "-16", "-30"])
def test_loudness_reaches_target_under_ceiling(
    stage: SignalEditStage, speech_24k: np.ndarray, option: str
) -> None:
    rate = 24000
    target, ceiling = (
        LOUDNESS_PROFILES[option] if option in LOUDNESS_PROFILES else (float(option), -1)
    )
    out = run_one(stage, speech_24k, rate, f"loudness={option}")
    assert lufs(out.samples, rate) == pytest.approx(target, abs=0.5)
    assert true_peak_db(out.samples) <= ceiling + 0.05
    assert out.frames == speech_24k.shape[0]


def test_loudness_limiter_engages_for_loud_targets(
    stage: SignalEditStage, speech_24k: np.ndarray
) -> None:
    rate = 24000
    plain = speech_24k * 10 ** ((-16 - lufs(speech_24k, rate)) / 20)
    assert true_peak_db(plain) > 0.0  # a plain gain would clip...
    out = run_one(stage, speech_24k, rate, "loudness=-16")
    assert lufs(out.samples, rate) == pytest.approx(-16.0, abs=0.1)  # ...the limiter does not
    assert true_peak_db(out.samples) <= -1.0 + 0.05
    assert basic_metrics(out)["clipped_samples"] == 0


def test_loudness_acx_window(stage: SignalEditStage, speech_24k: np.ndarray) -> None:
    out = run_one(stage, speech_24k, 24000, "loudness=acx")
    metrics = basic_metrics(out)
    assert -23.0 <= metrics["rms_dbfs"] <= -18.0
    assert metrics["rms_dbfs"] == pytest.approx(-20.0, abs=0.5)
    assert metrics["peak_dbfs"] <= -3.0


def test_loudness_8k_stereo(stage: SignalEditStage) -> None:
    rate = 8000
    mono, _ = utterance([("pause", 0.2), ("speech", 2.0), ("pause", 0.2)], rate, seed=3)
    stereo = np.stack([0.2 * mono, 0.1 * mono], axis=1)
    out = run_one(stage, stereo, rate, "loudness=ebu")
    assert lufs(out.samples, rate) == pytest.approx(-23.0, abs=0.5)
    assert true_peak_db(out.samples) <= -1.0 + 0.05
    ratio = rms(out.samples[:, 0]) / rms(out.samples[:, 1])
    assert ratio == pytest.approx(2.0, rel=1e-3)  # one gain for both channels: image kept


def test_unreachable_loudness_fails_instead_of_crushing(
    stage: SignalEditStage, speech_24k: np.ndarray
) -> None:
    item = make_item(speech_24k, 24000, "loudness=-5")
    stage.process_batch([item])
    assert item.error_code == "loudness_unreachable"


def test_silent_and_short_items_fail_alone(stage: SignalEditStage, speech_24k: np.ndarray) -> None:
    rate = 24000
    items = [
        make_item(np.zeros(rate * 2, dtype=np.float32), rate, "loudness=ebu", 0),
        make_item(speech_24k, rate, "loudness=ebu", 1),
        make_item(speech_24k[: rate // 5], rate, "loudness=ebu", 2),
        make_item(white_noise(rate, 1e-5), rate, "loudness=acx", 3),
        make_item(speech_24k[rate // 2 : rate // 2 + rate // 5], rate, "loudness=acx", 4),
    ]
    stage.process_batch(items)
    assert [item.error_code for item in items] == [
        "too_quiet",
        None,
        "too_short",
        "too_quiet",
        None,
    ]
    assert items[1].output is not None and items[4].output is not None
    assert items[0].output is None
    assert "gate" in items[0].error


# --- chains and batches ------------------------------------------------------------------------


def test_chain_runs_in_order(stage: SignalEditStage) -> None:
    rate = 24000
    layout = [("pause", 0.3), ("speech", 1.2), ("pause", 1.2), ("speech", 1.2), ("pause", 0.3)]
    signal, _ = utterance(layout, rate, seed=11)
    total = signal.shape[0] / rate  # 4.2 s
    # vad first: the pause becomes 0.3 s, then everything plays twice as fast
    vad_then_speed = run_one(stage, signal, rate, "vad;speed=2")
    assert vad_then_speed.duration == pytest.approx((total - 0.9) / 2, abs=0.06)
    # speed first: the pause becomes 0.6 s, then vad cuts it to 0.3 s
    speed_then_vad = run_one(stage, signal, rate, "speed=2;vad")
    assert speed_then_vad.duration == pytest.approx(total / 2 - 0.3, abs=0.06)


def test_batch_skips_failed_and_inactive_items_and_isolates_errors(
    stage: SignalEditStage,
) -> None:
    rate = 24000
    tone = harmonic(200.0, 1.0, rate)
    good = make_item(tone, rate, "speed=2", 0)
    earlier = make_item(tone, rate, "speed=2", 1)
    earlier.fail("missing_file", "gone")
    round0 = make_item(tone, rate, "speed=2", 2)
    round0.round, round0.round_edits = 0, ()  # no clone edit: nothing to do in round 0
    unsupported = make_item(tone, rate, "speed=2;emotion=happy", 3)
    no_audio = make_item(tone, rate, "denoise", 4)
    no_audio.audio = None
    items = [good, earlier, round0, unsupported, no_audio]
    assert stage.process_batch(items) is items
    assert good.output is not None and good.output.frames == rate // 2
    assert earlier.output is None and earlier.error_code == "missing_file"
    assert round0.output is None and not round0.failed
    assert unsupported.error_code == "unsupported_edit" and unsupported.output is None
    assert no_audio.error_code == "no_audio"


def test_runs_through_the_local_executor(tmp_path: Path) -> None:
    rate = 16000
    path = tmp_path / "tone.flac"
    sf.write(path, harmonic(180.0, 1.0, rate), rate)
    engine = SignalEngine()
    item = row_item(
        row_index=0, clip_id="t", audio_uri=str(path), edits=parse_chain("speed=faster")
    )
    (done,) = run_stages(build_stages(engine, 2, with_clone_round=False), [item])
    assert [r.status for r in done.records] == ["ok", "ok"]
    assert done.records[-1].duration_s == pytest.approx(1.0 / 1.25**2, abs=0.002)
    assert done.records[0].engine == "signal"


def test_speech_fixture_is_deterministic() -> None:
    np.testing.assert_array_equal(speechlike(0.5, 16000, seed=1), speechlike(0.5, 16000, seed=1))
