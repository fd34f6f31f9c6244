"""The narration leveler: dynamic speech (high crest factor, level drifts) lands inside ACX's
level window with a few dB of limiting at most; speech that fits is left alone; a clip no level
in the window can take is refused with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from stepedit_core.engines.signal import leveler, mastering
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.quality import qc
from stepedit_core.quality.delivery import check
from stepedit_core.signal import loudness
from stepedit_core.signal.meters import true_peak_dbtp
from stepedit_core.signal.vad import shared_vad

from signal_fixtures import narration, rms, utterance

RATE = 16000
WINDOW = (-23.0, -18.0)


def crest_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(x).max() / rms(x)))


def master_with_limiting(
    monkeypatch: pytest.MonkeyPatch, x: np.ndarray
) -> tuple[np.ndarray, float]:
    """`loudness=acx` on `x`; returns the output and the most limiting any level match did
    (dB the limiter's input true peak stood over the ceiling)."""
    seen = [0.0]
    real = loudness.limit

    def spy(samples: np.ndarray, rate: int, ceiling: float) -> np.ndarray:
        seen.append(true_peak_dbtp(samples, rate) - ceiling)
        return real(samples, rate, ceiling)

    monkeypatch.setattr(loudness, "limit", spy)
    return mastering.normalize(x, RATE, "acx"), max(seen)


@pytest.mark.parametrize(("crest", "drift"), [(26.0, 0.0), (30.0, 8.0)])
def test_dynamic_narration_lands_in_the_acx_window(
    monkeypatch: pytest.MonkeyPatch, crest: float, drift: float
) -> None:
    x = narration(45.0, RATE, drift_db=drift, crest_db=crest, seed=int(crest + drift))
    assert crest_db(x) > crest - 1.5
    out, limiting = master_with_limiting(monkeypatch, x)
    metrics = qc.measure(Audio(out, RATE)).metrics
    verdict = check(metrics, "acx")
    assert verdict.passed, verdict.reasons
    assert WINDOW[0] + 0.3 <= metrics["rms_dbfs"] <= WINDOW[1]
    assert limiting <= leveler.LIMIT_BUDGET_DB + 0.5


def test_without_the_leveler_the_same_narration_needs_far_more_limiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = narration(45.0, RATE, drift_db=8.0, crest_db=30.0, seed=38)
    monkeypatch.setattr(
        mastering,
        "level_speech",
        lambda samples, rate, spans, target, window, ceiling: leveler.Leveled(
            samples, target, 0.0, 0.0
        ),
    )
    try:
        _, limiting = master_with_limiting(monkeypatch, x)
    except ItemFailure as failure:  # refused outright: also what the leveler is for
        assert failure.code == "loudness_unreachable"
        return
    assert limiting > leveler.LIMIT_BUDGET_DB + 3.0


def speech_levels(x: np.ndarray, seconds: float = 4.0) -> np.ndarray:
    """RMS (dB) of the speech in consecutive stretches of `seconds`."""
    spans = shared_vad().speech(x, RATE, 0.1)
    mask = np.zeros(x.shape[0], dtype=bool)
    for start, end in spans:
        mask[start:end] = True
    size = round(seconds * RATE)
    levels = []
    for at in range(0, x.shape[0] - size + 1, size):
        part = x[at : at + size, 0][mask[at : at + size]]
        if part.size > size // 4:
            levels.append(20 * np.log10(rms(part)))
    return np.array(levels)


def test_drift_is_ridden_towards_one_level() -> None:
    x = narration(48.0, RATE, drift_db=10.0, crest_db=18.0, seed=5)
    spans = shared_vad().speech(x, RATE, 0.1)
    leveled = leveler.level_speech(x, RATE, spans, -20.0, WINDOW, -3.0)
    before, after = np.ptp(speech_levels(x)), np.ptp(speech_levels(leveled.samples))
    assert before > 8.0
    assert after < before - 4.0
    assert leveled.drift_db > 2.0


def test_speech_that_fits_is_not_touched() -> None:
    layout = [("pause", 0.7), ("speech", 2.0), ("pause", 0.5), ("speech", 1.5), ("pause", 1.5)]
    x = utterance(layout, RATE, floor_db=-55.0, seed=2)[0][:, None] * 0.1
    spans = shared_vad().speech(x, RATE, 0.1)
    # the plain gain to -20 dB RMS needs crest + margin - 20 - ceiling dB of limiting: 2 dB
    # (fits the target), then 4.5 dB (fits only lower in the window)
    crest = crest_db(x) + leveler.TRUE_PEAK_MARGIN_DB
    for ceiling in (crest - 22.0, crest - 24.5):
        leveled = leveler.level_speech(x, RATE, spans, -20.0, WINDOW, ceiling)
        assert leveled.samples is x or np.array_equal(leveled.samples, x)
        assert leveled.compression_db == 0.0
        assert WINDOW[0] <= leveled.aim_db <= -20.0
    assert leveled.aim_db == pytest.approx(-21.5, abs=0.01)  # aimed lower in the window


def test_a_clip_no_level_in_the_window_fits_is_refused_with_the_reason() -> None:
    """A click train: all its energy is in its peaks, so limiting takes level away one for
    one and no gain brings it into the window under the ceiling (crest factor 22 dB)."""
    x = np.zeros((3 * RATE, 1), dtype=np.float32)
    x[::160, 0] = 0.5
    with pytest.raises(ItemFailure) as raised:
        mastering.normalize(x, RATE, "acx")
    assert raised.value.code == "loudness_unreachable"
    message = str(raised.value)
    assert "no level in -23..-18 dB RMS" in message
    assert "the peaks stand 22.0 dB over the level" in message
