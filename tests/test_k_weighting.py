"""BS.1770 K-weighting without scipy.signal: the same filters as pyloudnorm, the same output as
scipy.signal.lfilter, and a fallback to lfilter when the compiled filter cannot be trusted."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import lfilter

from stepedit_core.signal import k_weighting
from stepedit_core.signal.k_weighting import KWeighting, biquad, recurrence

RATES = (8000, 16000, 22050, 24000, 44100, 48000, 96000)


@pytest.mark.parametrize("rate", RATES)
def test_stages_are_pyloudnorms_k_weighting(rate: int) -> None:
    reference = list(pyloudnorm.Meter(rate)._filters.values())
    ours = k_weighting.k_weighting(rate)
    assert len(ours) == len(reference) == 2
    for mine, theirs in zip(ours, reference, strict=True):
        np.testing.assert_allclose(mine.b, theirs.b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(mine.a, theirs.a, rtol=1e-12, atol=1e-15)


def test_blocks_with_carried_state_match_lfilter_on_the_whole_signal() -> None:
    rate = 44100
    x = np.random.default_rng(3).standard_normal(rate)
    want = x
    for stage in k_weighting.k_weighting(rate):
        want = lfilter(stage.b, stage.a, want)
    weighting = KWeighting(rate)
    cuts = [0, 1, 7, 4096, 4097, 30000, rate]
    got = np.concatenate([weighting.feed(x[s:e]) for s, e in zip(cuts, cuts[1:], strict=False)])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_a_strided_channel_is_filtered_like_a_contiguous_one() -> None:
    stereo = np.random.default_rng(4).standard_normal((5000, 2))
    strided = KWeighting(48000).feed(stereo[:, 1])
    contiguous = KWeighting(48000).feed(np.ascontiguousarray(stereo[:, 1]))
    np.testing.assert_array_equal(strided, contiguous)


def test_the_recurrence_reference_is_lfilter() -> None:
    stage = biquad("high_pass", 0.0, 0.5, 38.0, 48000)
    x = np.random.default_rng(5).standard_normal(200)
    np.testing.assert_allclose(
        recurrence(stage, x), lfilter(stage.b, stage.a, x), rtol=1e-9, atol=1e-12
    )


def test_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="low_shelf"):
        biquad("low_shelf", 1.0, 0.7, 100.0, 48000)


def test_a_compiled_filter_that_disagrees_falls_back_to_lfilter() -> None:
    def swapped(b, a, x, axis, zi):  # a calling convention this module does not expect
        return lfilter(a, b, x, axis, zi)

    def broken(b, a, x, axis, zi):
        raise TypeError("takes 3 arguments")

    assert k_weighting.choose(swapped) is lfilter
    assert k_weighting.choose(broken) is lfilter
    assert k_weighting.choose(None) is lfilter
    assert k_weighting.choose(k_weighting._load_compiled()) is not lfilter


def test_measuring_loudness_does_not_import_scipy_signal() -> None:
    code = (
        "import sys, numpy as np\n"
        "from stepedit_core.quality import qc\n"
        "from stepedit_core.signal import k_weighting\n"
        "from stepedit_core.signal.meters import LoudnessMeter\n"
        "x = np.random.default_rng(1).standard_normal((48000 * 2, 2)) * 0.1\n"
        "m = LoudnessMeter(48000, 2); m.feed(x[:30000]); m.feed(x[30000:])\n"
        "print(qc.loudness_of(m)[0])\n"
        "assert k_weighting.linear_filter().__name__ == '_linear_filter'\n"
        "print('scipy.signal' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) < 0 and out[1] == "False"
