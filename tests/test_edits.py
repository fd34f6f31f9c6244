import pytest

from stepedit_core.foundation.edits import (
    EMOTIONS,
    STYLES,
    EditError,
    EditSpec,
    format_chain,
    parse_chain,
    parse_edit,
)


def test_vocabulary_sizes_match_the_model():
    assert len(EMOTIONS) == 15 and "remove" in EMOTIONS
    assert len(STYLES) == 33 and "remove" in STYLES


@pytest.mark.parametrize(
    "text, expected",
    [
        ("emotion=happy", EditSpec("emotion", "happy")),
        ("style=act_coy", EditSpec("style", "act_coy")),
        ("speed=more  faster", EditSpec("speed", "more faster")),
        ("speed=1.25", EditSpec("speed", "1.25")),
        ("denoise", EditSpec("denoise")),
        ("vad", EditSpec("vad")),
        ("vad=0.5", EditSpec("vad", "0.5")),
        ("loudness=ACX", EditSpec("loudness", "acx")),
        ("loudness=-23", EditSpec("loudness", "-23")),
        ("paralinguistic", EditSpec("paralinguistic")),
        ("clone", EditSpec("clone")),
    ],
)
def test_parse_valid(text, expected):
    assert parse_edit(text) == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("emotion=joyful", "valid options: happy"),
        ("emotion", "needs an option"),
        ("speed=9", "factor from 0.25 to 4.0"),
        ("speed=nan", "unknown speed option"),
        ("loudness=+3", "LUFS from"),
        ("denoise=strong", "takes no option"),
        ("pitch=up", "unknown edit type 'pitch'"),
        ("", "empty edit"),
    ],
)
def test_parse_invalid_names_the_problem(text, fragment):
    with pytest.raises(EditError, match=fragment):
        parse_edit(text)


def test_speed_factors():
    assert parse_edit("speed=faster").speed_factor == 1.25
    assert parse_edit("speed=1.5").speed_factor == 1.5
    assert parse_edit("speed=more slower").speed_factor == pytest.approx(2 / 3)


def test_chain_round_trip():
    chain = parse_chain("denoise; loudness=-23 ;")
    assert chain == (EditSpec("denoise"), EditSpec("loudness", "-23"))
    assert format_chain(chain) == "denoise;loudness=-23"
    with pytest.raises(EditError):
        parse_chain(" ; ")
