"""Split plans for long clips (cut only in pauses), the `stepedit segments` command, and the
stitcher that joins edited segments back without clicks, room tone matched across each join."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from stepedit_core.catalog.segments import NoPause, plan
from stepedit_core.catalog.stitch import CROSSFADE_S, stitch
from stepedit_core.signal.meters import quiet_level_db
from stepedit_core.signal.vad import shared_vad
from stepedit_flows.cli import main

from signal_fixtures import narration

RATE = 16000


def spans_of(samples: np.ndarray, rate: int) -> list[tuple[int, int]]:
    return shared_vad().speech(samples, rate, 0.1)


def test_plan_is_contiguous_covers_the_clip_and_cuts_in_the_longest_late_pause() -> None:
    rate = 100  # frames are centiseconds: easy to read
    # speech 0-9 s, pauses: 9-9.5 s (short, late), 6-8 s (long, late half), 2-4 s (early half)
    spans = [(0, 200), (400, 600), (800, 900), (950, 1500), (1600, 2500)]
    pieces = plan(2500, rate, spans, max_s=10.0)
    assert pieces[0].start == 0 and pieces[-1].end == 2500
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))
    assert all(p.end - p.start <= 1000 for p in pieces)
    assert pieces[0].end == 700  # middle of the longest pause in 5..10 s, not the later short one
    for piece in pieces[:-1]:
        assert not any(a < piece.end < b for a, b in spans)


def test_plan_refuses_to_cut_inside_speech() -> None:
    with pytest.raises(NoPause, match=r"no pause between 0.0 s and 10.0 s"):
        plan(3000, 100, [(10, 2990)], max_s=10.0)


def test_plan_of_a_short_clip_is_one_piece() -> None:
    assert [(p.start, p.end) for p in plan(500, 100, [(10, 490)], 10.0)] == [(0, 500)]


@pytest.fixture(scope="module")
def chapter(tmp_path_factory) -> tuple[np.ndarray, str]:
    """Three minutes of dynamic narration at 16 kHz, written to a FLAC."""
    samples = narration(180.0, RATE, drift_db=6.0, crest_db=20.0, seed=21)
    path = tmp_path_factory.mktemp("chapter") / "chapter.flac"
    sf.write(path, samples, RATE, subtype="PCM_24")
    return samples, str(path)


def test_segments_command_prints_a_plan_cut_in_pauses(chapter, capsys) -> None:
    samples, path = chapter
    assert main(["segments", path, "--max-seconds", "25", "--json"]) == 0
    plan_ = json.loads(capsys.readouterr().out)
    assert plan_[0]["start_s"] == 0.0
    assert plan_[-1]["end_s"] == pytest.approx(samples.shape[0] / RATE, abs=1e-3)
    assert all(a["end_s"] == b["start_s"] for a, b in zip(plan_, plan_[1:], strict=False))
    assert all(0 < p["end_s"] - p["start_s"] <= 25.0 for p in plan_)
    assert len(plan_) >= 180 / 25
    for piece in plan_[:-1]:  # room tone (-50 dB), not speech, 20 ms around every cut
        at = round(piece["end_s"] * RATE)
        assert np.sqrt(np.mean(samples[at - 320 : at + 320] ** 2)) < 10 ** (-44 / 20)
    assert main(["segments", path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(plan_) and lines[0].split()[0] == "1"


def test_segments_command_names_a_missing_file(capsys) -> None:
    assert main(["segments", "/no/such/chapter.flac"]) == 2
    assert "audio file not found: /no/such/chapter.flac" in capsys.readouterr().err


def largest_step(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x[:, 0])).max())


def test_edited_segments_stitch_back_without_clicks_and_room_tone_matched(chapter) -> None:
    """Each segment 'edited' the way an engine may leave it: its own gain and its own noise
    floor (here 8 dB apart between neighbours). Joined: same length, speech kept (by its
    segment's gain), no step at any join beyond the signal's own, one room-tone level across."""
    samples, _ = chapter
    pieces = plan(samples.shape[0], RATE, spans_of(samples, RATE), 25.0)
    rng = np.random.default_rng(0)
    edited = []
    for index, piece in enumerate(pieces):
        gain = 10 ** ((-2.0 if index % 2 else 1.0) / 20)
        floor = 10 ** ((-58.0 if index % 2 else -50.0) / 20)
        segment = samples[piece.start : piece.end] * gain
        segment = segment + floor * rng.standard_normal(segment.shape).astype(np.float32)
        edited.append(segment.astype(np.float32))
    out, joins = stitch(edited, RATE, spans_of)
    assert out.shape == samples.shape  # length kept exactly
    assert joins == [p.start for p in pieces[1:]]
    fade = round(CROSSFADE_S * RATE)
    for join in joins:
        near = out[join - fade : join + fade]
        own = max(
            largest_step(out[join - RATE // 5 : join - fade]),
            largest_step(out[join + fade : join + RATE // 5]),
        )
        assert largest_step(near) <= own
        left = quiet_level_db(out[join - RATE // 10 : join - fade], RATE)
        right = quiet_level_db(out[join + fade : join + RATE // 10], RATE)
        assert abs(left - right) < 1.5, (join, left, right)
    # speech inside each segment is the edited speech, untouched by the joins
    for piece, segment in zip(pieces, edited, strict=True):
        for start, end in spans_of(samples[piece.start : piece.end], RATE):
            np.testing.assert_array_equal(
                out[piece.start + start : piece.start + end], segment[start:end]
            )
    speech_in = sum(b - a for a, b in spans_of(samples, RATE))
    speech_out = sum(b - a for a, b in spans_of(out, RATE))
    assert speech_out == pytest.approx(speech_in, rel=0.03)
