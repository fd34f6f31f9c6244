"""Speech detection on silero-vad's ONNX model gives what silero-vad's own JIT model and its
own span rules give: the same window scores (fed in odd-sized blocks), the same spans from the
same scores, and the same speech spans on the demo clips. The references import torch and
silero_vad here, in the tests only."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from stepedit_core.signal import silero_onnx, vad
from stepedit_core.signal.silero_onnx import WINDOW, WindowScorer, silero_model_path
from stepedit_core.signal.speech_hysteresis import spans_from_scores
from stepedit_core.signal.vad import (
    MIN_SPEECH_MS,
    SPEECH_MIN_SILENCE_S,
    VAD_RATE,
    SileroVad,
    shared_vad,
)

from signal_fixtures import narration, utterance, white_noise

DEMO = Path(__file__).resolve().parent.parent / "stepedit_core" / "demo"
DEMO_CLIPS = sorted(DEMO.glob("*.flac"))
ODD_BLOCKS = (1, 333, 511, 513, 4099)  # cycled: block edges fall anywhere in a window
SCORE_TOLERANCE = 1e-4


def _load(path: Path) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(path, dtype="float32", always_2d=True)
    return samples, rate


def _mono_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    return np.asarray(soxr.resample(mono, rate, VAD_RATE), dtype=np.float32)


SYNTHETIC = ("utterance", "narration", "white noise", "silence")


@cache
def _synthetic_16k() -> dict[str, np.ndarray]:
    layout = [("pause", 0.7), ("speech", 1.3), ("pause", 0.45), ("speech", 0.9), ("pause", 1.1)]
    return {
        "utterance": utterance(layout, VAD_RATE, seed=3)[0],
        "narration": narration(6.0, VAD_RATE, seed=5)[:, 0],
        "white noise": white_noise(3 * VAD_RATE + 77, 0.05, seed=2),
        "silence": np.zeros(VAD_RATE + 300, dtype=np.float32),
    }


@cache
def _signals_16k() -> dict[str, np.ndarray]:
    demo = {path.stem: _mono_16k(*_load(path)) for path in DEMO_CLIPS}
    return {**demo, **_synthetic_16k()}


@pytest.fixture(scope="module")
def jit_model():
    import torch
    from silero_vad import load_silero_vad

    threads = torch.get_num_threads()
    model = load_silero_vad()
    torch.set_num_threads(threads)  # importing silero_vad pins torch to one thread
    return model


def _jit_scores(model, audio16: np.ndarray) -> list[float]:
    """silero-vad's JIT model over whole windows, the last one padded with zeros."""
    import torch

    padded = np.concatenate([audio16, np.zeros(-audio16.shape[0] % WINDOW, np.float32)])
    model.reset_states()
    with torch.inference_mode():
        return [
            float(model(torch.from_numpy(padded[at : at + WINDOW]), VAD_RATE).item())
            for at in range(0, padded.shape[0], WINDOW)
        ]


class _JitScorer:
    """The JIT model behind the WindowScorer interface (for the reference pipeline)."""

    def __init__(self, model) -> None:
        self.model = model
        model.reset_states()

    def score(self, windows: np.ndarray) -> list[float]:
        import torch

        with torch.inference_mode():
            return [
                float(self.model(torch.from_numpy(windows[at : at + WINDOW]), VAD_RATE).item())
                for at in range(0, windows.shape[0], WINDOW)
            ]


class _JitVad(SileroVad):
    def __init__(self, model) -> None:
        self.model = model

    def scorer(self) -> _JitScorer:  # type: ignore[override]
        return _JitScorer(self.model)


def _silero_spans(scores, **options) -> list[tuple[int, int]]:
    from silero_vad import get_speech_timestamps_from_probs

    found = get_speech_timestamps_from_probs(scores, **options)
    return [(stamp["start"], stamp["end"]) for stamp in found]


def _feed_in_odd_blocks(finder, samples: np.ndarray) -> None:
    at, index = 0, 0
    while at < samples.shape[0]:
        size = ODD_BLOCKS[index % len(ODD_BLOCKS)]
        finder.feed(samples[at : at + size])
        at, index = at + size, index + 1


# --------------------------------------------------------------------------- model scores


@pytest.mark.parametrize("name", [path.stem for path in DEMO_CLIPS] + list(SYNTHETIC))
def test_onnx_scores_match_the_jit_model_window_by_window(jit_model, name: str) -> None:
    audio16 = _signals_16k()[name]
    finder = shared_vad().finder(VAD_RATE, 1, SPEECH_MIN_SILENCE_S)
    _feed_in_odd_blocks(finder, audio16[:, None])
    finder.finish()
    reference = _jit_scores(jit_model, audio16)
    assert len(finder.scores) == len(reference) == -(-audio16.shape[0] // WINDOW)
    difference = np.abs(np.array(finder.scores) - np.array(reference))
    assert difference.max() < SCORE_TOLERANCE, f"window {int(difference.argmax())}"


def test_the_scores_see_speech_and_not_silence() -> None:
    signals = _synthetic_16k()
    scorer = shared_vad().scorer()
    speech = signals["utterance"]
    assert max(scorer.score(speech[: speech.shape[0] // WINDOW * WINDOW])) > 0.9
    scorer.reset_states()
    silence = signals["silence"]
    assert max(scorer.score(silence[: silence.shape[0] // WINDOW * WINDOW])) < 0.1


def test_state_and_context_carry_across_calls_and_reset() -> None:
    audio = _mono_16k(*_load(DEMO_CLIPS[0]))
    audio = audio[: audio.shape[0] // WINDOW * WINDOW]
    vad_ = shared_vad()
    whole = vad_.scorer().score(audio)
    scorer = vad_.scorer()
    split = scorer.score(audio[: 7 * WINDOW]) + scorer.score(audio[7 * WINDOW :])
    assert split == whole  # the same computation, call boundary or not
    scorer.reset_states()
    assert scorer.score(audio) == whole
    # without the carried state the same windows score differently
    fresh_from_the_middle = vad_.scorer().score(audio[7 * WINDOW :])
    assert fresh_from_the_middle != whole[7:]


def test_interleaved_finders_keep_their_own_streams() -> None:
    first = _mono_16k(*_load(DEMO_CLIPS[0]))[:, None]
    second = _mono_16k(*_load(DEMO_CLIPS[-1]))[:, None]
    vad_ = shared_vad()
    alone = [vad_.speech(first, VAD_RATE, 0.1), vad_.speech(second, VAD_RATE, 0.1)]
    finders = [vad_.finder(VAD_RATE, 1, 0.1), vad_.finder(VAD_RATE, 1, 0.1)]
    for at in range(0, max(first.shape[0], second.shape[0]), 1000):
        finders[0].feed(first[at : at + 1000])
        finders[1].feed(second[at : at + 1000])
    assert [finder.finish() for finder in finders] == alone


def test_scorer_refuses_part_of_a_window() -> None:
    with pytest.raises(ValueError, match="whole 512-sample windows"):
        shared_vad().scorer().score(np.zeros(WINDOW + 1, np.float32))


def test_model_file_is_found_in_the_wheel_and_its_absence_explained(monkeypatch) -> None:
    assert silero_model_path().name == "silero_vad.onnx" and silero_model_path().is_file()
    monkeypatch.setattr(silero_onnx.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="silero-vad is not installed"):
        silero_model_path()


def test_the_session_is_single_threaded_on_the_cpu() -> None:
    session = shared_vad().session
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().inter_op_num_threads == 1
    assert isinstance(shared_vad().scorer(), WindowScorer)


# --------------------------------------------------------------------------- span rules


def _random_scores(rng: random.Random, kind: int) -> list[float]:
    count = rng.randint(0, 400)
    if kind == 0:  # independent probabilities
        return [rng.random() for _ in range(count)]
    if kind == 1:  # runs of levels around both thresholds
        levels = (0.01, 0.2, 0.34, 0.35, 0.36, 0.49, 0.5, 0.51, 0.97)
        scores: list[float] = []
        while len(scores) < count:
            scores += [rng.choice(levels)] * rng.randint(1, 15)
        return scores[:count]
    # words and pauses: smooth rises and decays like a model's output
    scores, value = [], 0.0
    for _ in range(count):
        target = 0.95 if rng.random() < 0.5 else 0.02
        value += (target - value) * rng.uniform(0.1, 0.9)
        scores.append(value)
    return scores


PRODUCT_OPTIONS = [  # what SpeechFinder.finish asks for: min_silence_s clamped to 1..100 ms
    {"min_speech_ms": MIN_SPEECH_MS, "min_silence_ms": ms, "pad_ms": 0} for ms in (1, 50, 100)
]
OTHER_OPTIONS = [
    {"min_speech_ms": 250, "min_silence_ms": 100, "pad_ms": 30},  # silero-vad's defaults
    {"min_speech_ms": 0, "min_silence_ms": 0, "pad_ms": 10, "threshold": 0.3},
    {"min_speech_ms": 31, "min_silence_ms": 64, "pad_ms": 7.5, "threshold": 0.7},
    {"min_speech_ms": 60, "min_silence_ms": 32, "pad_ms": 100, "off_threshold": 0.2},
    {"min_speech_ms": 60, "min_silence_ms": 100, "pad_ms": 0, "threshold": 0.005},
]


@pytest.mark.parametrize("options", PRODUCT_OPTIONS + OTHER_OPTIONS)
def test_spans_equal_silero_vads_rules(options: dict) -> None:
    rng = random.Random(str(options))
    names = {"min_speech_ms": "min_speech_duration_ms", "min_silence_ms": "min_silence_duration_ms",
             "pad_ms": "speech_pad_ms", "off_threshold": "neg_threshold"}  # fmt: skip
    theirs = {names.get(key, key): value for key, value in options.items()}
    found_any = 0
    for trial in range(300):
        scores = _random_scores(rng, trial % 3)
        total = max(0, len(scores) * WINDOW - rng.randint(0, WINDOW - 1))
        ours = spans_from_scores(
            scores, total_samples=total, window=WINDOW, sample_rate=VAD_RATE, **options
        )
        reference = _silero_spans(
            scores, sampling_rate=VAD_RATE, audio_length_samples=total, **theirs
        )
        assert ours == reference, f"trial {trial}: {scores}"
        assert all(isinstance(edge, int) for span in ours for edge in span)
        found_any += bool(ours)
    assert found_any > 100  # the sequences do produce speech


def test_span_rules_on_a_hand_made_sequence() -> None:
    # 0.2 s at 0.9 (windows 2-11), a 3-window dip, 0.9 again until window 20, then silence
    scores = [0.0] * 2 + [0.9] * 10 + [0.1] * 3 + [0.9] * 5 + [0.0] * 10
    spans = spans_from_scores(
        scores, total_samples=30 * WINDOW, window=WINDOW, sample_rate=VAD_RATE,
        min_speech_ms=60, min_silence_ms=100, pad_ms=0,
    )  # fmt: skip
    assert spans == [(2 * WINDOW, 20 * WINDOW)]  # the 96 ms dip is shorter than 100 ms
    split = spans_from_scores(
        scores, total_samples=30 * WINDOW, window=WINDOW, sample_rate=VAD_RATE,
        min_speech_ms=60, min_silence_ms=50, pad_ms=0,
    )  # fmt: skip
    assert split == [(2 * WINDOW, 12 * WINDOW), (15 * WINDOW, 20 * WINDOW)]


# --------------------------------------------------------------------------- speech spans


@pytest.mark.parametrize("path", DEMO_CLIPS, ids=lambda path: path.stem)
@pytest.mark.parametrize("min_silence_s", [SPEECH_MIN_SILENCE_S, 0.05])
def test_demo_speech_spans_equal_the_jit_pipelines(
    jit_model, monkeypatch, path: Path, min_silence_s: float
) -> None:
    samples, rate = _load(path)
    ours = shared_vad().speech(samples, rate, min_silence_s)
    assert ours  # every demo clip has speech

    def silero_rules(scores, *, total_samples, window, sample_rate, **options):
        assert window == WINDOW
        return _silero_spans(
            scores,
            sampling_rate=sample_rate,
            audio_length_samples=total_samples,
            min_speech_duration_ms=options["min_speech_ms"],
            min_silence_duration_ms=options["min_silence_ms"],
            speech_pad_ms=options["pad_ms"],
        )

    # the pipeline as it was: the JIT model's scores, silero-vad's own span rules
    monkeypatch.setattr(vad, "spans_from_scores", silero_rules)
    reference = _JitVad(jit_model).speech(samples, rate, min_silence_s)
    assert ours == reference
