"""AudioRef and AudioSink: content-addressed FLAC objects on local disk and on S3 (moto)."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import soundfile as sf
from work_items import row_item

from stepedit_core.foundation.audio import Audio, encode_flac
from stepedit_core.foundation.audio_ref import AudioRef, AudioSink, load_audio, publish, sha256_file

from conftest import tone


def stereo(seconds: float = 0.5, rate: int = 16000) -> Audio:
    samples = tone(seconds, rate, channels=2)
    samples[:, 1] *= 0.5  # channels differ, so a swap would show
    return Audio(samples, rate)


def quantised(audio: Audio) -> np.ndarray:
    """What 24-bit FLAC keeps of the samples."""
    return np.round(np.clip(audio.samples, -1, 1) * 2**23) / 2**23


def test_sink_publishes_content_addressed_flac(tmp_path):
    audio = stereo()
    with AudioSink(audio.sample_rate, 2, str(tmp_path / "round-audio")) as sink:
        sink.write(audio.samples[:3000])
        sink.write(audio.samples[3000:])
    ref = sink.ref
    assert ref is not None
    data = (tmp_path / "round-audio" / f"{ref.sha256}.flac").read_bytes()
    assert hashlib.sha256(data).hexdigest() == ref.sha256
    assert ref.uri == str(tmp_path / "round-audio" / f"{ref.sha256}.flac")
    assert (ref.sample_rate, ref.frames, ref.channels) == (16000, audio.frames, 2)
    assert ref.duration == pytest.approx(0.5)
    assert sf.info(ref.uri).subtype == "PCM_24"
    np.testing.assert_allclose(ref.load().samples, quantised(audio), atol=1e-6)
    # no temporaries are left next to the object
    assert [p.name for p in (tmp_path / "round-audio").iterdir()] == [f"{ref.sha256}.flac"]


def test_same_content_is_written_once_and_never_over(tmp_path):
    audio = stereo()
    first = publish(audio, str(tmp_path))
    path = tmp_path / f"{first.sha256}.flac"
    before = path.stat().st_mtime_ns
    second = publish(audio, str(tmp_path), block_frames=777)  # other blocks, same bytes
    assert second == first
    assert path.stat().st_mtime_ns == before
    other = publish(Audio(audio.samples * 0.5, audio.sample_rate), str(tmp_path))
    assert other.sha256 != first.sha256


def test_blocks_read_and_load_agree(tmp_path):
    audio = stereo(1.0)
    ref = publish(audio, str(tmp_path))
    whole = ref.load().samples
    blocks = list(ref.blocks(frames=4096))
    assert all(b.dtype == np.float32 and b.shape[1] == 2 and len(b) <= 4096 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    np.testing.assert_array_equal(ref.read(5000, 1000), whole[5000:6000])
    np.testing.assert_array_equal(ref.read(15500), whole[15500:])
    assert ref.read(ref.frames - 10, 100).shape == (10, 2)  # clipped at the end
    with pytest.raises(ValueError, match="outside"):
        ref.read(ref.frames + 1)


def test_the_same_bytes_as_encode_flac(tmp_path):
    """A published object is what `encode_flac` makes of the same samples, so a hash taken
    either way names the same audio."""
    audio = stereo()
    ref = publish(audio, str(tmp_path))
    assert hashlib.sha256(encode_flac(audio)).hexdigest() == ref.sha256


def test_pickles_as_its_fields_only():
    ref = AudioRef("s3://runs/r/x.flac", "ab" * 32, 44100, 10**9, 2)
    data = pickle.dumps(ref)
    assert pickle.loads(data) == ref
    assert len(data) < 250  # no samples, whatever the length
    assert ref.duration == pytest.approx(10**9 / 44100)


def test_load_audio_reads_references_only(tmp_path):
    audio = stereo()
    assert load_audio(audio) is audio
    assert load_audio(None) is None
    loaded = load_audio(publish(audio, str(tmp_path)))
    assert isinstance(loaded, Audio) and loaded.frames == audio.frames


def test_sink_refuses_wrong_channels_and_abandons(tmp_path):
    sink = AudioSink(16000, 2, str(tmp_path / "objs"))
    with pytest.raises(ValueError, match="1 channels, the sink 2"):
        sink.write(np.zeros(100, np.float32))
    with pytest.raises(RuntimeError), AudioSink(16000, 1, str(tmp_path / "objs")) as failing:
        failing.write(np.zeros(100, np.float32))
        raise RuntimeError("stage failed")
    sink.abandon()
    assert not (tmp_path / "objs").exists()  # nothing published


def test_on_s3(s3):
    audio = stereo()
    ref = publish(audio, "s3://runs/audio-ref-test/round-audio")
    assert ref.uri == f"s3://runs/audio-ref-test/round-audio/{ref.sha256}.flac"
    assert hashlib.sha256(s3.cat_file(ref.uri)).hexdigest() == ref.sha256
    assert sha256_file(ref.uri) == ref.sha256
    np.testing.assert_allclose(ref.load().samples, quantised(audio), atol=1e-6)
    np.testing.assert_array_equal(np.concatenate(list(ref.blocks(frames=1000))), ref.load().samples)
    np.testing.assert_array_equal(ref.read(100, 50), ref.load().samples[100:150])
    assert publish(audio, "s3://runs/audio-ref-test/round-audio") == ref


def test_work_item_holds_audio_or_a_reference(tmp_path):

    audio = stereo(2.0)
    item = row_item(0, "a", "a.wav", (), audio=audio)
    in_memory = len(pickle.dumps(item))
    item.audio = publish(audio, str(tmp_path))
    item.audio_dir = str(tmp_path)
    assert len(pickle.dumps(item)) < in_memory / 20
    loaded = item.samples("audio")
    assert isinstance(loaded, Audio) and loaded.frames == audio.frames
    assert item.samples("output") is None


def test_a_long_source_is_passed_on_by_reference_and_checked_as_a_load_is(tmp_path):
    from stepedit_core.foundation.audio_ref import BY_REFERENCE_OVER_S
    from stepedit_core.lifecycle.rounds import LoadAudio

    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, tone(BY_REFERENCE_OVER_S + 5, 8000), 8000)
    bad = tone(BY_REFERENCE_OVER_S + 5, 8000)
    bad[len(bad) // 2] = np.nan
    sf.write(tmp_path / "nan.wav", bad, 8000, subtype="FLOAT")
    uris = [str(long_clip), str(tmp_path / "nan.wav"), str(tmp_path / "gone.wav")]
    items = [
        row_item(i, f"c{i}", uri, (), audio_dir=str(tmp_path / "objs"))
        for i, uri in enumerate(uris)
    ]
    short = row_item(9, "s", write_short(tmp_path), (), audio_dir=str(tmp_path / "objs"))
    LoadAudio().process_batch([*items, short])
    ref = items[0].audio
    assert isinstance(ref, AudioRef) and items[0].original is ref
    assert ref.uri == str(long_clip) and ref.frames == int((BY_REFERENCE_OVER_S + 5) * 8000)
    assert (
        ref.sha256 == items[0].source_sha256 == hashlib.sha256(long_clip.read_bytes()).hexdigest()
    )
    assert items[1].error_code == "non_finite_samples" and "1 NaN/inf" in str(items[1].error)
    assert items[2].error_code == "missing_file"
    assert isinstance(short.audio, Audio)  # a short line is read whole, as before


def write_short(folder) -> str:
    path = folder / "short.wav"
    sf.write(path, tone(1.0, 8000), 8000)
    return str(path)


def test_a_long_engine_output_travels_to_qc_by_reference(tmp_path):
    """An engine publishes a long output where it made it; QC measures the object in blocks
    and the record points at it. A short output rides along as samples."""
    from stepedit_core.catalog.records import RoundRecord
    from stepedit_core.engines.signal.engine import SignalEngine
    from stepedit_core.foundation.audio_ref import BY_REFERENCE_OVER_S
    from stepedit_core.foundation.edits import parse_chain
    from stepedit_core.quality.delivery import QcPlan
    from stepedit_core.quality.qc_result import QcResult
    from stepedit_core.quality.round_qc import MeasureRound

    (stage,) = SignalEngine().build_stages()
    stage.setup()
    items = []
    for i, seconds in enumerate((BY_REFERENCE_OVER_S + 3, 2.0)):
        item = row_item(i, f"c{i}", "mem://", parse_chain("loudness=-23"), audio_dir=str(tmp_path))
        item.round, item.round_edits = 1, item.edits
        item.audio = item.original = Audio(tone(seconds, 16000) * 0.3, 16000)
        items.append(item)
    stage.process_batch(items)
    long_item, short_item = items
    assert isinstance(long_item.output, AudioRef) and isinstance(short_item.output, Audio)
    in_memory = load_audio(long_item.output)
    assert in_memory is not None and in_memory.frames == int((BY_REFERENCE_OVER_S + 3) * 16000)

    qc = MeasureRound(QcPlan())
    qc.setup()
    qc.process_batch(items)
    for item in items:
        assert not item.failed and item.round_qc is not None
        assert isinstance(item.output, AudioRef)  # both are objects once QC has published
        assert QcResult.parse(item.round_qc.qc_json).metrics["loudness_lufs"] == pytest.approx(
            -23, abs=0.5
        )
        record = RoundRecord.of(item, "signal", "test")
        assert record.audio_ref is not None and record.output_sha256 == item.output.sha256
    assert long_item.round_qc.basic["duration_s"] == pytest.approx(BY_REFERENCE_OVER_S + 3)
    assert short_item.round_qc.basic["duration_s"] == pytest.approx(2.0)
