"""Delivery checks on signals built to break one limit each, and best-round selection."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from stepedit_core.engines.signal.mastering import normalize
from stepedit_core.foundation.audio import Audio
from stepedit_core.quality import delivery, qc
from stepedit_core.quality.delivery import PROFILES, Profile, Verdict, check, select_best
from stepedit_core.signal.loudness import match_level

from signal_fixtures import utterance

RATE = 24000
ACX_LAYOUT = [("pause", 0.75), ("speech", 1.5), ("pause", 0.6), ("speech", 1.4), ("pause", 1.5)]


@pytest.fixture(scope="module")
def acx_clip() -> np.ndarray:
    """A clip that meets ACX: speech over a -45 dB floor, mastered with loudness=acx."""
    signal, _ = utterance(ACX_LAYOUT, RATE, floor_db=-45.0, seed=21)
    return normalize(signal[:, None], RATE, "acx")


def verdict(samples: np.ndarray, profile: str, source: np.ndarray | None = None) -> Verdict:
    reference = Audio(source, RATE) if source is not None else None
    return check(qc.measure(Audio(samples, RATE), reference).metrics, profile)


def only_reason(result: Verdict, key: str) -> str:
    assert not result.passed
    assert len(result.reasons) == 1, result.reasons
    assert f"({key})" in result.reasons[0]
    return result.reasons[0]


def test_the_mastered_clip_passes_acx(acx_clip: np.ndarray) -> None:
    result = verdict(acx_clip, "acx")
    assert result == Verdict(True, [], [])


def test_acx_rms_too_loud_and_too_quiet(acx_clip: np.ndarray) -> None:
    loud = verdict(acx_clip * 10 ** (4 / 20), "acx")  # its peaks go over -3 dBFS too
    assert not loud.passed
    assert "RMS level (rms_dbfs) is -16.0" in loud.reasons[0]
    assert loud.reasons[0].endswith("outside -23..-18 dB")
    assert any(reason.startswith("sample peak (peak_dbfs)") for reason in loud.reasons)
    # 4 dB quieter: RMS -24 fails; the floor (-70) and the peak still pass
    quiet = only_reason(verdict(acx_clip * 10 ** (-4 / 20), "acx"), "rms_dbfs")
    assert "is -24" in quiet


def test_acx_sample_peak(acx_clip: np.ndarray) -> None:
    clicked = acx_clip.copy()
    clicked[RATE * 2] = 0.9  # one click at -0.9 dBFS, RMS unchanged
    reason = only_reason(verdict(clicked, "acx"), "peak_dbfs")
    assert reason == "sample peak (peak_dbfs) is -0.92 dBFS, above the limit of -3 dBFS"


def test_acx_noise_floor(acx_clip: np.ndarray) -> None:
    # the same layout with its -45 dB floor, brought to -20 dB RMS without mastering
    signal, _ = utterance(ACX_LAYOUT, RATE, floor_db=-45.0, seed=21)
    levelled, _ = match_level(signal[:, None], RATE, "acx")
    metrics = qc.measure(Audio(levelled, RATE)).metrics
    assert -50.0 < metrics["noise_floor_db"] < -35.0  # -45 dB plus the level gain
    reason = only_reason(check(metrics, "acx"), "noise_floor_db")
    assert reason == (
        f"noise floor (noise_floor_db) is {metrics['noise_floor_db']:g} dB, above the limit of "
        "-60 dB"
    )


def test_acx_dead_silence_warns_without_failing(acx_clip: np.ndarray) -> None:
    metrics = qc.measure(Audio(acx_clip, RATE)).metrics
    metrics = {**metrics, "noise_floor_db": -120.0}
    result = check(metrics, "acx")
    assert result.passed
    assert len(result.warnings) == 1 and "dead silence" in result.warnings[0]


def test_acx_head_and_tail(acx_clip: np.ndarray) -> None:
    short_head = acx_clip[int(0.5 * RATE) :]  # 0.25 s of room tone left at the head
    reason = only_reason(verdict(short_head, "acx"), "head_silence_s")
    assert "outside 0.5..1 s" in reason
    short_tail = acx_clip[: -int(1.0 * RATE)]  # 0.5 s left at the tail
    reason = only_reason(verdict(short_tail, "acx"), "tail_silence_s")
    assert "outside 1..5 s" in reason


def test_clipped_samples(acx_clip: np.ndarray) -> None:
    clipped = acx_clip.copy()
    clipped[RATE * 2 : RATE * 2 + 3] = 1.0
    result = verdict(clipped, "acx")
    assert not result.passed
    assert any("(clipped_samples) is 3, above the limit of 0" in r for r in result.reasons)


def r128_clip() -> np.ndarray:
    signal, _ = utterance(ACX_LAYOUT, RATE, floor_db=-60.0, seed=22)
    return normalize(signal[:, None], RATE, "ebu")


def test_r128_passes_and_fails_on_loudness_and_format() -> None:
    clip = r128_clip()
    assert verdict(clip, "r128", clip).passed
    reason = only_reason(verdict(clip * 10 ** (-2 / 20), "r128", clip), "loudness_lufs")
    assert "integrated loudness (loudness_lufs) is -25" in reason
    assert "outside -23.5..-22.5 LUFS" in reason
    metrics = qc.measure(Audio(soxr.resample(clip, RATE, 16000), 16000), Audio(clip, RATE))
    reason = only_reason(check(metrics.metrics, "r128"), "format_matches_source")
    assert "16000 Hz x 1 ch" in reason


def test_netflix_drift_limit() -> None:
    signal, _ = utterance(ACX_LAYOUT, RATE, floor_db=-60.0, seed=23)
    clip = normalize(signal[:, None], RATE, "netflix")
    source = np.concatenate([clip, clip[-int(0.06 * RATE) :]])  # the source is 60 ms longer
    reason = only_reason(verdict(clip, "netflix", source), "drift_s")
    assert "(drift_s) is -60.0 ms, beyond +-40 ms" in reason
    assert verdict(clip, "netflix", clip).passed


def test_unmeasured_limits_fail_and_profile_none_passes() -> None:
    result = check({"rms_dbfs": -20.0}, "acx")
    assert not result.passed
    assert any("noise floor (noise_floor_db) could not be measured" in r for r in result.reasons)
    assert check({}, "none") == Verdict(True, [], [])
    with pytest.raises(ValueError, match="unknown delivery profile 'ebu'"):
        check({}, "ebu")


def test_profiles_are_the_spec_numbers() -> None:
    acx, r128, netflix = PROFILES["acx"], PROFILES["r128"], PROFILES["netflix"]
    assert acx.rms_range_db == (-23.0, -18.0) and acx.sample_peak_max_dbfs == -3.0
    assert acx.noise_floor_max_db == -60.0 and acx.head_s == (0.5, 1.0)
    assert acx.tail_s == (1.0, 5.0)
    assert (r128.lufs_target, r128.lufs_tolerance, r128.true_peak_max_dbtp) == (-23, 0.5, -1)
    assert (netflix.lufs_target, netflix.lufs_tolerance, netflix.true_peak_max_dbtp) == (
        -27,
        2,
        -2,
    )
    assert netflix.max_drift_s == 0.040
    assert delivery.profile_for_loudness("ebu-r128") is r128
    assert delivery.profile_for_loudness("-20") is None
    # the mastering targets sit inside the limits
    for profile in PROFILES.values():
        if profile.head_s:
            assert profile.head_s[0] < (profile.head_target_s or 0) < profile.head_s[1]
        if profile.noise_floor_max_db is not None:
            assert (profile.noise_floor_target_db or 0) < profile.noise_floor_max_db


# --- best round ----------------------------------------------------------------------------------

PASSING = {"rms_dbfs": -20.0, "peak_dbfs": -4.0, "noise_floor_db": -66.0, "head_silence_s": 0.7,
           "tail_silence_s": 1.5, "clipped_samples": 0, "duration_s": 5.0}  # fmt: skip


def rnd(**changes: float | None) -> dict[str, float | int | None]:
    return {**PASSING, **changes}


def test_best_round_is_the_most_similar_passing_round() -> None:
    rounds = [
        (1, rnd(speaker_similarity=0.91, ltas_distance_db=1.0)),
        (2, rnd(speaker_similarity=0.95, ltas_distance_db=3.0, noise_floor_db=-50.0)),  # fails
        (3, rnd(speaker_similarity=0.88, ltas_distance_db=0.5)),
    ]
    chosen = select_best(rounds, "acx")
    assert chosen is not None
    assert (chosen.round, chosen.passed, chosen.basis) == (1, True, "speaker_similarity")
    assert chosen.score == pytest.approx(0.91)
    assert "round 1: highest speaker similarity to the source (0.910)" in chosen.reason
    assert "among 2 of 3 rounds passing acx" in chosen.reason


def test_best_round_falls_back_to_the_spectrum_then_the_targets() -> None:
    rounds = [
        (1, rnd(speaker_similarity=0.9, ltas_distance_db=2.0)),
        (2, rnd(speaker_similarity=None, ltas_distance_db=0.7)),  # heavy QC failed here
        (3, rnd(speaker_similarity=0.8, ltas_distance_db=1.2)),
    ]
    chosen = select_best(rounds, "acx")
    assert chosen is not None and (chosen.round, chosen.basis) == (2, "ltas_distance_db")
    assert "closest long-term spectrum to the source (0.70 dB apart)" in chosen.reason
    no_source = [(1, rnd(rms_dbfs=-21.5)), (2, rnd(rms_dbfs=-19.8)), (3, rnd(rms_dbfs=-18.5))]
    chosen = select_best(no_source, "acx")
    assert chosen is not None and (chosen.round, chosen.basis) == (2, "target_deviation")
    assert "closest to the acx targets" in chosen.reason


def test_best_round_when_none_passes_and_ties() -> None:
    failing = [(1, rnd(noise_floor_db=-40.0, ltas_distance_db=0.5)),
               (2, rnd(noise_floor_db=-45.0, ltas_distance_db=0.9))]  # fmt: skip
    chosen = select_best(failing, "acx")
    assert chosen is not None and (chosen.round, chosen.passed) == (1, False)
    assert chosen.reason.startswith("round 1: no round passes acx;")
    tied = [(1, rnd(ltas_distance_db=1.0)), (2, rnd(ltas_distance_db=1.0))]
    chosen = select_best(tied, "acx")
    assert chosen is not None and chosen.round == 2  # ties go to the later round
    chosen = select_best([(1, {}), (2, {})], "none")
    assert chosen is not None and chosen.round == 2 and chosen.passed
    assert select_best([], "acx") is None


def test_custom_profiles_are_data() -> None:
    strict = Profile(name="strict", description="test", true_peak_max_dbtp=-6.0)
    result = check({"true_peak_dbtp": -4.5}, strict)
    assert result.reasons == ["true peak (true_peak_dbtp) is -4.5 dBTP, above the limit of -6 dBTP"]
