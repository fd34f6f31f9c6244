"""Mastering in blocks equals mastering in memory: blocks much smaller than the clip, so block
edges fall inside speech and on the limiter's peaks."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from work_items import row_item

from stepedit_core.engines.signal import mastering
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.signal import level_blocks, loudness
from stepedit_core.signal.blocks import array_blocks, read_blocks

from signal_fixtures import narration

RATE = 44100
ODD_BLOCK = 3001


@pytest.fixture(scope="module")
def chapter(tmp_path_factory) -> tuple[np.ndarray, str]:
    x = narration(16.0, RATE, seed=4)
    path = str(tmp_path_factory.mktemp("chapter") / "in.wav")
    sf.write(path, x, RATE, subtype="FLOAT")  # float: no quantisation between the two paths
    return x, path


def test_overlapped_chunks_cover_the_stream_once() -> None:
    stream = np.arange(10_000, dtype=np.float32)[:, None]
    centres = []
    for piece, at, length in level_blocks.overlapped(array_blocks(stream, 777), 1000, 300):
        centre = piece[at : at + length, 0]
        assert piece[0, 0] == max(0, centre[0] - 300)  # the left neighbour, where there is one
        centres.append(centre)
    assert np.array_equal(np.concatenate(centres), stream[:, 0])


@pytest.mark.parametrize("option", ["acx", "-16"])
def test_level_match_in_blocks_equals_in_memory(chapter, tmp_path, option: str) -> None:
    x, path = chapter
    expected, gain = loudness.match_level(x, RATE, option)
    opened = lambda: read_blocks(path, ODD_BLOCK)  # noqa: E731
    leveled = level_blocks.match_level_blocks(opened, RATE, 1, option)
    assert leveled.gain_db == pytest.approx(gain, abs=0.01)
    _, _, ceiling = loudness.target_for(option)
    out = tmp_path / "out.wav"
    level_blocks.write_level_matched(opened, out, RATE, 1, leveled, ceiling, subtype="FLOAT")
    got = sf.read(out, dtype="float32", always_2d=True)[0]
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) < 1e-5


def test_level_match_in_blocks_refuses_silence_as_in_memory() -> None:
    silence = np.zeros((RATE, 1), np.float32)
    with pytest.raises(ItemFailure) as in_memory:
        loudness.match_level(silence, RATE, "acx")
    with pytest.raises(ItemFailure) as in_blocks:
        level_blocks.match_level_blocks(lambda: array_blocks(silence, 1000), RATE, 1, "acx")
    assert in_blocks.value.code == in_memory.value.code == "too_quiet"


@pytest.mark.parametrize(
    "floor_db,lead_s",
    [(-50.0, 0.0), (-140.0, 0.0), (-70.0, 3.0)],
    ids=["room-tone", "near-silent-pauses-get-a-bed", "long-head-is-cut"],
)
def test_acx_master_in_blocks_equals_in_memory(tmp_path, floor_db: float, lead_s: float) -> None:
    from stepedit_core.engines.signal.master_blocks import master_file
    from stepedit_core.quality.delivery import PROFILES

    x = narration(9.0, RATE, floor_db=floor_db, seed=5)
    if lead_s:
        x = np.concatenate([np.full((round(lead_s * RATE), 1), 1e-5, np.float32), x])
    expected = mastering.normalize(x, RATE, "acx")
    source, target = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(source, x, RATE, subtype="FLOAT")
    mastered = master_file(source, target, "acx", PROFILES["acx"], block=ODD_BLOCK, subtype="FLOAT")
    got = sf.read(target, dtype="float32", always_2d=True)[0]
    assert got.shape == expected.shape and mastered.frames == expected.shape[0]
    assert float(np.abs(got - expected).max()) < 1e-4
    # the speech it found travels with the file, in the output's frames, for QC
    assert mastered.spans and mastered.spans[-1][1] <= mastered.frames
    head = mastered.spans[0][0] / RATE
    assert 0.5 <= head <= 1.0  # ACX's head of room tone


@pytest.mark.parametrize("edit", ["loudness=acx", "loudness=-16"])
def test_signal_engine_streams_a_referenced_chapter_into_the_store(tmp_path, edit: str) -> None:
    from stepedit_core.engines.signal import SignalEditStage
    from stepedit_core.foundation.audio_ref import AudioRef, publish
    from stepedit_core.foundation.edits import parse_chain
    from stepedit_core.foundation.stages import WorkItem

    x = narration(9.0, RATE, seed=8)
    store = str(tmp_path / "audio")
    ref = publish(Audio(x, RATE), store)
    engine = SignalEditStage()

    def item(audio: Audio | AudioRef, audio_dir: str | None) -> WorkItem:
        made = row_item(0, "ch1", "mem://", parse_chain(edit))
        made.round, made.round_edits = 1, made.edits
        made.audio, made.audio_dir = audio, audio_dir
        return made

    by_ref = item(ref, store)
    engine.process_item(by_ref)
    assert isinstance(by_ref.output, AudioRef)
    assert by_ref.output.uri.startswith(store) and by_ref.output.sha256 in by_ref.output.uri
    in_memory = item(ref.load(), None)  # the same samples, decoded whole
    engine.process_item(in_memory)
    expected = in_memory.output.samples
    got = by_ref.output.load().samples
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) < 1e-4  # 24-bit FLAC steps are 1.2e-7
    if edit == "loudness=acx":  # speech found once, in the output's frames, for QC
        spans = by_ref.output_speech
        assert spans and spans[-1][1] <= by_ref.output.frames


def test_delivered_mp3_from_a_file_matches_the_in_memory_package(tmp_path) -> None:
    from stepedit_core.foundation.audio import decode, encode_flac
    from stepedit_core.quality.delivered_files import deliver_file, package
    from stepedit_core.quality.delivery import QcPlan
    from stepedit_core.signal.vad import shared_vad

    mastered = mastering.normalize(narration(9.0, RATE, seed=6), RATE, "acx")
    source = tmp_path / "round.flac"
    source.write_bytes(encode_flac(Audio(mastered, RATE)))
    plan = QcPlan(profile="acx", deliver_format="mp3")
    in_memory = package(source.read_bytes(), lambda ext, part: f"out.{ext}", plan)
    spans = shared_vad().speech(decode(source.read_bytes()).samples, RATE, 0.1)
    encoded, passed, reasons = deliver_file(source, tmp_path / "out.mp3", plan, None, spans)
    (expected,) = in_memory.files
    assert passed == in_memory.qc_pass and passed, reasons
    assert encoded.trim_db == pytest.approx(expected.trim_db, abs=0.01)
    got, want = decode((tmp_path / "out.mp3").read_bytes()), decode(expected.data)
    assert got.frames == want.frames and float(np.abs(got.samples - want.samples).max()) < 5e-3
