"""The signal primitives give the same results fed in blocks much smaller than the clip (block
edges inside speech and on peaks) as fed the whole clip at once, and the meters agree with the
references they replace (pyloudnorm, one-shot soxr)."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from stepedit_core.foundation.audio import Audio
from stepedit_core.quality import qc
from stepedit_core.signal import blocks, meters, resample
from stepedit_core.signal.vad import SPEECH_MIN_SILENCE_S, shared_vad

from signal_fixtures import narration

RATE = 44100
ODD_BLOCK = 3001  # frames: never lines up with a 10 ms frame, a 32 ms VAD window or a hop


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return narration(12.0, RATE, seed=11)


def feed(meter, samples: np.ndarray, size: int = ODD_BLOCK):
    for block in blocks.array_blocks(samples, size):
        meter.feed(block)
    return meter


@pytest.mark.parametrize("rate,channels", [(44100, 1), (22050, 2), (11025, 1)])
def test_loudness_and_range_match_pyloudnorm_in_blocks(rate: int, channels: int) -> None:
    rng = np.random.default_rng(rate)
    frames = int(rate * 7.3)
    ramp = np.linspace(0.01, 0.3, frames)[:, None]
    x = (rng.standard_normal((frames, channels)) * ramp).astype(np.float32)
    reference = pyloudnorm.Meter(rate)
    meter = feed(meters.LoudnessMeter(rate, channels), x, 997)
    assert meter.integrated() == pytest.approx(
        reference.integrated_loudness(x.astype(float)), abs=1e-6
    )
    assert meter.loudness_range() == pytest.approx(
        reference.loudness_range(x.astype(float)), abs=1e-3
    )


def test_loudness_meter_refuses_what_bs1770_does_not_define() -> None:
    with pytest.raises(ValueError, match="at most 5 channels"):
        meters.LoudnessMeter(RATE, 6)
    short = feed(meters.LoudnessMeter(RATE, 1), np.zeros((RATE // 4, 1), np.float32))
    with pytest.raises(ValueError, match="0.4 s"):
        short.integrated()


def test_true_peak_with_a_block_edge_on_the_peak(clip: np.ndarray) -> None:
    at = int(np.argmax(np.abs(clip[:, 0])))
    whole = float(meters.frame_true_peaks(clip, RATE).max())
    meter = meters.TruePeakMeter(RATE, 1)
    for part in (clip[:at], clip[at : at + 1], clip[at + 1 :]):  # the peak is a block of its own
        meter.feed(part)
    assert meter.finish() == pytest.approx(whole, rel=1e-5)
    assert whole >= float(np.abs(clip).max())


def test_level_and_noise_floor_do_not_depend_on_the_block_size(clip: np.ndarray) -> None:
    level = feed(meters.LevelMeter(), clip)
    assert level.rms == pytest.approx(float(np.sqrt(np.mean(clip.astype(float) ** 2))), rel=1e-9)
    assert level.peak == float(np.abs(clip).max())
    floor = feed(meters.NoiseFloorMeter(RATE, 1), clip).finish()
    assert floor == meters.noise_floor_db(clip, RATE)
    assert floor is not None and floor < -40  # the narration's room tone, not its speech


def test_streamed_resampling_matches_one_shot(clip: np.ndarray) -> None:
    whole = resample.resample(clip, RATE, 16000)
    streamed = blocks.collect(
        resample.resample_blocks(blocks.array_blocks(clip, ODD_BLOCK), RATE, 16000, 1), 1
    )
    assert streamed.shape == whole.shape
    assert float(np.abs(streamed - whole).max()) < 1e-4


def test_speech_found_in_blocks_equals_speech_found_whole(clip: np.ndarray) -> None:
    vad = shared_vad()
    whole = vad.speech(clip, RATE, SPEECH_MIN_SILENCE_S)
    finder = feed(vad.finder(RATE, 1, SPEECH_MIN_SILENCE_S), clip)
    assert whole, "the narration has speech"
    assert finder.finish() == whole


def test_qc_of_a_file_in_small_blocks_equals_qc_in_memory(clip: np.ndarray, tmp_path) -> None:
    path = tmp_path / "round.flac"
    sf.write(path, clip, RATE, format="FLAC", subtype="PCM_24")
    audio = Audio(sf.read(path, dtype="float32", always_2d=True)[0], RATE)
    source = qc.reference(Audio(narration(12.5, RATE, seed=12), RATE))
    in_memory = qc.measure(audio, source).metrics
    streamed = qc.measure_file(path, source, block_frames=ODD_BLOCK).metrics
    for key, value in in_memory.items():
        if key.startswith("dnsmos") or key == "speaker_similarity":
            assert streamed[key] is None
        elif isinstance(value, float):
            assert streamed[key] == pytest.approx(value, abs=0.011), key
        else:
            assert streamed[key] == value, key
    # speech found once (by mastering) and handed to QC gives the same verdict without the VAD
    spans = shared_vad().speech(audio.samples, RATE, SPEECH_MIN_SILENCE_S)
    given = qc.measure_file(path, source, spans=spans, block_frames=ODD_BLOCK).metrics
    assert given["speech_ratio"] == in_memory["speech_ratio"]
    assert given["ltas_distance_db"] == pytest.approx(in_memory["ltas_distance_db"], abs=0.011)


def test_block_writer_hashes_the_file_it_wrote(clip: np.ndarray, tmp_path) -> None:
    path = tmp_path / "out.flac"
    with blocks.BlockWriter(path, RATE, 1) as writer:
        for block in blocks.array_blocks(clip * 2.0, ODD_BLOCK):  # over full scale: clipped
            writer.write(block)
    assert writer.frames == clip.shape[0]
    assert writer.sha256 == blocks.file_sha256(path)
    back = blocks.collect(blocks.read_blocks(path, 1000), 1)
    assert back.shape == clip.shape and float(np.abs(back).max()) <= 1.0


def test_delivered_file_encoded_in_blocks_matches_in_memory(clip: np.ndarray, tmp_path) -> None:
    from stepedit_core.foundation.audio import decode, sha256_bytes
    from stepedit_core.quality.encoding import DeliverFormat, encode, encode_file, encode_under_peak

    loud = np.clip(clip * 1.2, -1.0, 1.0)  # a peak over ACX's -3 dBFS: the MP3 is trimmed
    source = tmp_path / "round.flac"
    sf.write(source, loud, RATE, format="FLAC", subtype="PCM_24")
    audio = Audio(sf.read(source, dtype="float32", always_2d=True)[0], RATE)
    flac = DeliverFormat("flac")
    written = encode_file(source, tmp_path / "out.flac", flac, block=ODD_BLOCK)
    assert (tmp_path / "out.flac").read_bytes() == encode(audio, flac)
    assert written.sha256 == sha256_bytes(encode(audio, flac))
    mp3 = DeliverFormat("mp3", 192, mono=True)
    data, decoded, trim = encode_under_peak(audio, mp3, -3.0)
    streamed = encode_file(source, tmp_path / "out.mp3", mp3, -3.0, block=ODD_BLOCK)
    assert trim < 0 and streamed.trim_db == pytest.approx(trim, abs=0.01)
    assert streamed.peak_dbfs is not None and streamed.peak_dbfs <= -3.0
    back = decode((tmp_path / "out.mp3").read_bytes())
    assert back.sample_rate == 44100 and back.frames == decoded.frames
    # the resampler's block edges differ (1e-7), which the lossy code may round either way
    difference = back.samples - decoded.samples
    assert float(np.abs(difference).max()) < 5e-3
    assert float(np.sqrt(np.mean(difference**2))) < 1e-4


def test_qc_of_referenced_audio_and_a_streamed_reference(clip: np.ndarray, tmp_path) -> None:
    from stepedit_core.foundation.audio_ref import publish

    source_audio = Audio(narration(12.5, RATE, seed=12), RATE)
    ref = publish(Audio(clip, RATE), str(tmp_path / "audio"))
    audio = ref.load()
    in_memory = qc.measure(audio, qc.reference(source_audio)).metrics
    streamed_source = qc.reference_blocks(
        lambda: blocks.array_blocks(source_audio.samples, ODD_BLOCK), RATE, 1
    )
    by_ref = qc.measure_ref(ref, streamed_source).metrics
    for key in ("rms_dbfs", "true_peak_dbtp", "loudness_lufs", "noise_floor_db", "drift_s"):
        assert by_ref[key] == pytest.approx(in_memory[key], abs=0.011), key
    assert by_ref["ltas_distance_db"] == pytest.approx(in_memory["ltas_distance_db"], abs=0.011)
    assert by_ref["speech_ratio"] == in_memory["speech_ratio"]
