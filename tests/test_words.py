"""Word timings and the fillers edit, on Piper clips with fillers inserted at known times
(tests/words_clips: clips.json holds the speech spans of every script piece and filler)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from stepedit_core.foundation.edits import EditError, fillers_of, parse_edit
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.quality.delivery import check, select_best
from stepedit_core.report.cuts import cuts_strip
from stepedit_core.words.align import tokens
from stepedit_core.words.backends import word_timings
from stepedit_core.words.edit import remove_fillers
from stepedit_core.words.fillers import Cut, apply_cuts, plan_cuts, unexplained_voice
from stepedit_core.words.language import uses_characters
from stepedit_core.words.numbers import spell_numbers
from stepedit_core.words.timing import Word, words_from_json, words_json
from stepedit_core.words.wer import error_rate

CLIPS_DIR = Path(__file__).resolve().parent / "words_clips"
CLIPS = {c["clip_id"]: c for c in json.loads((CLIPS_DIR / "clips.json").read_text())}
FILLED = [cid for cid, c in CLIPS.items() if c["filler_spans"]]
CROSSFADE_TOLERANCE_S = 0.011  # a cut's edges are blended over 10 ms of kept room tone


def load(clip_id: str) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(CLIPS_DIR / CLIPS[clip_id]["file"], dtype="float32", always_2d=True)
    return samples, rate


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def test_fillers_option_is_parsed_against_the_filler_vocabulary():
    assert fillers_of(parse_edit("fillers")) == (("um", "uh", "uhm", "er", "ah", "hmm"), False)
    assert fillers_of(parse_edit("fillers=list")) == (("um", "uh", "uhm", "er", "ah", "hmm"), True)
    assert fillers_of(parse_edit("fillers=UM, uh,um")) == (("um", "uh"), False)
    assert fillers_of(parse_edit("fillers=list,hmm")) == (("hmm",), True)
    with pytest.raises(EditError, match="unknown filler 'like'"):
        parse_edit("fillers=um,like")


def test_tokens_spell_numbers_and_keep_apostrophes():
    assert tokens("It's 11, Ma'am!") == ["it's", "eleven", "ma'am"]


def test_alignment_gives_every_word_of_the_text_in_order_and_no_filler_on_a_clean_clip():
    samples, rate = load("plain_01")
    timings = word_timings(samples, rate, CLIPS["plain_01"]["text"], "en")
    assert timings.backend == "pocketsphinx"
    assert [w.word for w in timings.words] == tokens(CLIPS["plain_01"]["text"])
    assert not any(w.filler for w in timings.words)
    spans = CLIPS["plain_01"]["script_spans"]
    (first_start, _), (_, last_end) = spans[0], spans[-1]
    assert abs(timings.words[0].start - first_start) < 0.05
    assert abs(timings.words[-1].end - last_end) < 0.1
    assert words_from_json(words_json(timings.words)) == timings.words


@pytest.mark.parametrize("snr_db", [None, 10.0], ids=["clean", "noise-10dB"])
@pytest.mark.parametrize("clip_id", FILLED)
def test_fillers_are_cut_and_no_word_of_the_script_is(clip_id, snr_db):
    clip = CLIPS[clip_id]
    samples, rate = load(clip_id)
    if snr_db is not None:  # white noise at a clip-wide SNR, seeded
        noise = np.random.default_rng(7).standard_normal(samples.shape).astype(np.float32)
        samples = samples + noise * np.sqrt(np.mean(samples**2)) / 10 ** (snr_db / 20)
    result = remove_fillers(parse_edit("fillers"), samples, rate, clip["text"], "en")
    cuts = [(c.start_s, c.end_s) for c in result.cuts]
    inserted = sum(b - a for a, b in clip["filler_spans"])
    removed = sum(overlap(f, c) for f in clip["filler_spans"] for c in cuts)
    assert removed >= 0.8 * inserted, (clip_id, result.cuts)
    for span in clip["script_spans"]:
        for cut in cuts:
            assert overlap(tuple(span), cut) <= CROSSFADE_TOLERANCE_S, (clip_id, span, cut)
    # the output is the input less the cuts (plus any room tone put in, less the crossfades)
    expected = len(samples) / rate - sum(c.end_s - c.start_s - c.room_tone_s for c in result.cuts)
    assert abs(result.samples.shape[0] / rate - expected) <= 0.011 * (2 * len(cuts) + 1)
    assert result.samples.shape[1] == samples.shape[1]


def test_a_clip_without_fillers_comes_out_unchanged():
    samples, rate = load("plain_01")
    result = remove_fillers(parse_edit("fillers"), samples, rate, CLIPS["plain_01"]["text"], "en")
    assert result.cuts == []
    assert np.array_equal(result.samples, samples)


def test_fillers_list_only_records_the_cuts():
    samples, rate = load("fill_01")
    result = remove_fillers(
        parse_edit("fillers=list"), samples, rate, CLIPS["fill_01"]["text"], None
    )
    assert result.cuts and np.array_equal(result.samples, samples)


def test_only_the_chosen_fillers_are_cut():
    words = [
        Word("so", 0.2, 0.5),
        Word("ah", 0.8, 1.0, 0.9, True),
        Word("i", 1.4, 1.5),
        Word("um", 1.8, 2.0, 0.9, True),
        Word("go", 2.3, 2.6),
    ]
    assert [c.word for c in plan_cuts(words, ("um",), 3.0)] == ["um"]
    assert [c.word for c in plan_cuts(words, ("um", "ah"), 3.0)] == ["ah", "um"]


def test_a_cut_leaves_the_longer_pause_and_fills_a_short_one_with_room_tone():
    words = [Word("so", 0.2, 0.5), Word("um", 0.55, 0.8, 0.9, True), Word("go", 0.85, 1.2)]
    (cut,) = plan_cuts(words, ("um",), 1.5)
    # pauses of 0.05 s either side: both kept, 0.05 s of room tone makes the 0.15 s minimum
    assert cut == Cut(0.55, 0.8, "um", pytest.approx(0.05))
    rate = 16000
    rng = np.random.default_rng(1)
    floor = (rng.standard_normal((int(1.5 * rate), 1)) * 0.001).astype(np.float32)
    out = apply_cuts(floor, rate, [cut], [(0.0, 0.2), (1.2, 1.5)])
    assert abs(out.shape[0] - floor.shape[0] - round((0.05 - 0.25) * rate)) <= 2
    filled = out[int(0.56 * rate) : int(0.59 * rate)]
    level = 20 * np.log10(np.sqrt(np.mean(filled**2)) / 0.001)
    assert abs(level) < 3.0  # the room tone has the level of the clip's pauses


def test_voiced_stretches_no_word_explains_count_as_fillers():
    # Whisper-like times: "the" reaches back over a filler and its pause, "key" into the next
    words = [Word("the", 0.0, 1.0, 0.2), Word("key", 1.1, 1.6, 0.9), Word("go", 2.5, 2.8, 0.9)]
    voiced = [(0.3, 0.5), (0.8, 1.3), (1.45, 1.7), (2.0, 2.2), (2.5, 2.8), (3.0, 4.5)]
    marked = unexplained_voice(words, voiced)
    fillers = [(w.start, w.end) for w in marked if w.filler]
    assert fillers == [(0.3, 0.5), (2.0, 2.2)]  # not the 1.5 s stretch: speech the ASR missed
    kept = {w.word: (w.start, w.end) for w in marked if not w.filler}
    assert kept == {"the": (0.8, 1.0), "key": (1.45, 1.6), "go": (2.5, 2.8)}


def test_no_text_and_no_asr_is_a_clear_failure():
    samples, rate = load("plain_01")
    with pytest.raises(ItemFailure, match="--asr-models") as info:
        word_timings(samples, rate, None, "en")
    assert info.value.code == "no_word_timings"
    with pytest.raises(ItemFailure, match="language de"):
        word_timings(samples, rate, "Guten Tag", "de")


def test_wer_ignores_case_and_punctuation_and_counts_every_kind_of_error():
    assert error_rate("Hello, World!", "hello world") == 0.0
    assert error_rate("the cat sat", "the bat sat down") == pytest.approx(2 / 3)
    assert error_rate("the cat sat", "cat sat") == pytest.approx(1 / 3)
    assert error_rate("It's fine.", "its fine") == pytest.approx(1 / 2)
    assert error_rate("...", "anything") is None


def test_cer_for_chinese_and_japanese():
    assert uses_characters("zh-CN") and uses_characters("ja") and not uses_characters("en")
    assert error_rate("你好，世界。", "你好世界", "zh") == 0.0
    assert error_rate("你好世界", "你好世", "zh") == pytest.approx(1 / 4)
    # the same text as words would be one word, wrong as a whole
    assert error_rate("你好世界", "你好世", "en") == 1.0


def test_review_page_strip_marks_each_cut_on_the_input_timeline():
    cuts = '[{"start_s": 1.0, "end_s": 1.5, "word": "um", "room_tone_s": 0.0}]'
    strip = cuts_strip(cuts, 4.0)
    assert 'x="25.00%"' in strip and 'width="12.50%"' in strip
    assert "um: 1.00-1.50 s cut" in strip
    assert cuts_strip("[]", 4.0) == "" and cuts_strip(None, None) == ""


def test_the_wer_limit_fails_rounds_and_best_never_picks_one_over_it():
    over, under = {"wer": 0.5, "ltas_distance_db": 0.1}, {"wer": 0.1, "ltas_distance_db": 3.0}
    verdict = check(over, "none", max_wer=0.3)
    assert not verdict.passed and "wer) is 0.5, above the limit of 0.3" in verdict.reasons[0]
    assert not check({"wer": None}, "none", max_wer=0.3).passed  # unmeasured: not verified
    assert check(over, "none").passed  # no limit, no gate
    picked = select_best([(1, over), (2, under)], "none", max_wer=0.3)
    assert picked is not None and picked.round == 2 and "--qc-max-wer 0.3" in picked.reason
    # no round passes the profile: the fallback still never takes a round over the limit
    picked = select_best([(1, {**over, "rms_dbfs": -40}), (2, {**under, "rms_dbfs": -40})], "acx",
                         max_wer=0.3)  # fmt: skip
    assert picked is not None and picked.round == 2 and not picked.passed
    assert select_best([(1, over), (2, over)], "none", max_wer=0.3) is None


@pytest.mark.parametrize(
    "text",
    [
        "The train was late this morning, and nobody told us why.",  # "again" left out
        "The train was late again this morning, and told us why.",  # "nobody" left out
        "The train was very late again this morning, and nobody told us why.",  # one too many
    ],
)
def test_a_text_that_misses_a_word_never_gets_that_word_cut(text):
    clip = CLIPS["fill_02"]
    samples, rate = load("fill_02")
    result = remove_fillers(parse_edit("fillers"), samples, rate, text, "en")
    for span in clip["script_spans"]:
        for cut in result.cuts:
            assert overlap(tuple(span), (cut.start_s, cut.end_s)) <= CROSSFADE_TOLERANCE_S


def test_no_cut_on_the_demo_clips_which_have_no_fillers():
    from stepedit_core.demo import DEMO_DIR

    for entry in json.loads((Path(DEMO_DIR) / "clips.json").read_text()):
        samples, rate = sf.read(Path(DEMO_DIR) / entry["file"], dtype="float32", always_2d=True)
        result = remove_fillers(parse_edit("fillers"), samples, rate, entry["text"], "en")
        assert result.cuts == [], entry["clip_id"]
        assert np.array_equal(result.samples, samples)


def test_numbers_are_spelled_as_they_are_read():
    def spelled(text: str) -> str:
        return " ".join(spell_numbers(text).split())

    assert spelled("11 days") == "eleven days"
    assert spelled("1,024") == "one thousand twenty four"
    assert spelled("in 1999 and 2024, not 2000") == (
        "in nineteen ninety nine and twenty twenty four , not two thousand"
    )
    assert spelled("1905 007") == "nineteen oh five zero zero seven"
    assert error_rate("A ship in eleven days.", "a ship in 11 days", "en") == 0.0
    assert tokens("Room 101") == ["room", "one", "hundred", "one"]


def test_any_rate_and_channel_count():
    import soxr

    clip = CLIPS["fill_01"]
    mono, rate = load("fill_01")
    stereo = np.repeat(soxr.resample(mono, rate, 44100), 2, axis=1) * np.array([1.0, 0.5])
    stereo = stereo.astype(np.float32)
    result = remove_fillers(parse_edit("fillers"), stereo, 44100, clip["text"], "en")
    assert result.samples.shape[1] == 2 and len(result.cuts) == 1
    (cut,) = result.cuts
    ((start, end),) = clip["filler_spans"]
    assert overlap((start, end), (cut.start_s, cut.end_s)) >= 0.8 * (end - start)
    # both channels get the same cut: the level ratio between them is kept
    ratio = result.samples[:, 1] / np.where(result.samples[:, 0] == 0, 1, result.samples[:, 0])
    assert np.allclose(ratio[np.abs(result.samples[:, 0]) > 1e-3], 0.5, atol=1e-3)
