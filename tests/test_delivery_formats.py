"""Delivered files in another format (WAV, constant-bitrate MP3) and in parts: the encoder's
own bitrate and overshoot, QC on the decoded file, and the audit trail through them."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stepedit_core.audit import clip_history, verify_run
from stepedit_core.demo import demo_clips
from stepedit_core.engines.signal import mastering
from stepedit_core.foundation.audio import Audio, decode, encode_flac
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.quality import delivery
from stepedit_core.quality.delivered_files import package
from stepedit_core.quality.delivery import QcPlan
from stepedit_core.quality.encoding import DeliverFormat, encode, encode_under_peak, mp3_bitrates

from conftest import run_inprocess, write_manifest
from signal_fixtures import narration


def peak_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.abs(x).max()))


@pytest.mark.parametrize("kbps", [128, 192, 320])
def test_mp3_is_constant_bitrate_44k_and_keeps_the_length(kbps: int) -> None:
    rate = 24000
    x = narration(6.0, rate, seed=1)
    data = encode(Audio(x, rate), DeliverFormat("mp3", kbps))
    assert mp3_bitrates(data) == {kbps}
    back = decode(data)
    assert back.sample_rate == 44100
    assert back.frames == round(x.shape[0] * 44100 / rate)


def test_wav_is_24_bit_and_acx_mp3_is_mono() -> None:
    stereo = np.repeat(narration(3.0, 44100, seed=2), 2, axis=1) * [1.0, 0.5]
    info = sf.info(io.BytesIO(encode(Audio(stereo, 44100), DeliverFormat("wav"))))
    assert (info.subtype, info.channels) == ("PCM_24", 2)
    mono = decode(encode(Audio(stereo, 44100), DeliverFormat("mp3", 192, mono=True)))
    assert mono.channels == 1


def test_bad_format_and_bitrate_are_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="expected one of flac, wav, mp3"):
        DeliverFormat("ogg")
    with pytest.raises(ValueError, match="expected one of 128, 160, 192"):
        DeliverFormat("mp3", 200)
    with pytest.raises(ValueError, match="ACX takes MP3 at 192 kbps or more"):
        QcPlan(profile="acx", deliver_format="mp3", mp3_bitrate=160)
    with pytest.raises(ValueError, match="ACX takes MP3 at 192 kbps or more, not 128 kbps"):
        JobSpec(
            manifest_uri="m.parquet", out="o", run_id="r", qc="acx", deliver_format="mp3",
            mp3_bitrate=128,
        )  # fmt: skip


def test_encoder_overshoot_is_measured_on_the_decoded_file_and_trimmed() -> None:
    """A square wave at -3.05 dBFS overshoots once the encoder band-limits it (Gibbs)."""
    rate = 44100
    t = np.arange(rate * 2) / rate
    square = (np.sign(np.sin(2 * np.pi * 1000 * t)) * 10 ** (-3.05 / 20))[:, None]
    fmt = DeliverFormat("mp3", 192)
    plain = decode(encode(Audio(square, rate), fmt))
    assert peak_db(plain.samples) > -3.0  # what a FLAC-only check would have shipped
    data, back, trim = encode_under_peak(Audio(square, rate), fmt, -3.0)
    assert trim < 0.0
    assert peak_db(back.samples) <= -3.0
    assert peak_db(decode(data).samples) <= -3.0


def test_a_clip_over_the_profile_s_length_is_delivered_in_parts_cut_in_pauses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ACX's 120 minutes, scaled down to 20 s so the test stays small."""
    short = dataclasses.replace(delivery.PROFILES["acx"], max_duration_s=20.0)
    monkeypatch.setitem(delivery.PROFILES, "acx", short)
    rate = 44100
    mastered = mastering.normalize(narration(50.0, rate, crest_db=20.0, seed=4), rate, "acx")
    names = []

    def path_for(ext: str, part: int | None) -> str:
        names.append(f"clip.part{part:02d}.{ext}")
        return names[-1]

    plan = QcPlan(profile="acx", deliver_format="mp3")
    result = package(encode_flac(Audio(mastered, rate)), path_for, plan)
    count = len(result.files)
    assert count >= 3
    assert [f.path for f in result.files] == [f"clip.part{n:02d}.mp3" for n in range(1, count + 1)]
    # each part, with the room tone added at its cut edges, is within the limit on its own
    assert all(decode(f.data).duration <= 20.0 for f in result.files)
    assert result.qc_pass, result.qc_reasons  # each part has its own head and tail room tone
    starts = [f.start_s for f in result.files]
    ends = [f.end_s for f in result.files]
    assert starts[0] == 0.0 and starts[1:] == ends[:-1]  # contiguous
    assert ends[-1] == pytest.approx(mastered.shape[0] / rate, abs=1e-3)
    assert all(end - start <= 20.0 for start, end in zip(starts, ends, strict=True))
    for cut in ends[:-1]:  # inside a pause: the mastered floor, not speech, around the cut
        at = round(cut * 44100)
        assert np.sqrt(np.mean(mastered[at - 441 : at + 441] ** 2)) < 10 ** (-50 / 20)


@pytest.fixture(scope="module")
def mp3_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mp3")
    clip = next(c for c in demo_clips() if c["clip_id"] == "clean_02")
    manifest = write_manifest(
        folder / "m.parquet", [{"clip_id": "clean_02", "audio_uri": str(clip["path"])}]
    )
    spec = JobSpec(
        manifest_uri=manifest,
        out=str(folder / "runs"),
        run_id="mp3",
        edits=["loudness=acx"],
        executor="local",
        allow_roots=[str(Path(clip["path"]).parent)],
        qc="acx",
        deliver_format="mp3",
    )
    run_inprocess(spec)
    return folder / "runs", pq.read_table(folder / "runs" / "mp3" / "manifest.parquet").to_pylist()


def test_an_acx_mp3_run_delivers_a_checked_cbr_mp3_that_verify_follows(mp3_run) -> None:
    runs, rows = mp3_run
    (row,) = rows
    assert row["status"] == "ok" and row["output_uri"].endswith(".mp3")
    assert row["qc_status"] == "pass", row["qc_reasons"]
    data = Path(row["output_uri"]).read_bytes()
    assert mp3_bitrates(data) == {192}
    back = decode(data)
    assert (back.sample_rate, back.channels) == (44100, 1)
    assert peak_db(back.samples) <= -3.0
    assert -23.0 <= 20 * np.log10(np.sqrt(np.mean(back.samples**2))) <= -18.0
    (entry,) = json.loads(row["delivered_files"])
    assert entry["uri"] == row["output_uri"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    report = verify_run(str(runs), "mp3")
    assert report.intact, report.text()
    assert report.checked["delivered files"] == 1
    history = clip_history(str(runs), "mp3", "clean_02")
    assert history["intact"] and history["final"]["delivered"] == row["output_uri"]


def test_verify_names_an_altered_mp3(mp3_run, tmp_path) -> None:
    runs, rows = mp3_run
    path = Path(rows[0]["output_uri"])
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-100])
        report = verify_run(str(runs), "mp3")
        assert not report.intact
        assert "delivered_altered" in report.text()
    finally:
        path.write_bytes(original)


def test_the_review_page_shows_the_delivered_mp3_with_its_overview_and_qc(mp3_run) -> None:
    from stepedit_core.report import build_report

    runs, rows = mp3_run
    index = Path(build_report(str(runs), "mp3"))
    page = index.read_text()
    name = Path(rows[0]["output_uri"]).name
    assert f'src="../audio/{name}"' in page
    assert (index.parent / f"../audio/{name}").resolve().exists()
    assert 'class="waveform"' in page and "delivered (1 file(s))" in page
    assert '<span class="badge pass">QC pass</span>' in page


def test_the_overview_marks_each_cut_between_parts() -> None:
    from stepedit_core.report.waveform import envelope, waveform_svg

    rate = 1000
    x = np.concatenate([np.full(3000, 0.5), np.full(2000, -0.25)]).astype(np.float32)[:, None]
    low, high = envelope(x, 5)
    np.testing.assert_allclose(high, [0.5, 0.5, 0.5, -0.25, -0.25])
    svg = waveform_svg(x, rate, [(3.0, "part 2")])
    assert 'x1="480.0"' in svg and ">part 2</text>" in svg
    assert svg.count("<rect") == 800


def test_incremental_keys_tell_delivery_formats_apart_and_keep_flac_keys() -> None:
    import hashlib as _hashlib

    from stepedit_core.engines import make_engine
    from stepedit_core.lifecycle.incremental import key_settings

    def job(**extra) -> JobSpec:
        return JobSpec(manifest_uri="m.parquet", out="o", run_id="r", **extra)

    engine = make_engine("signal")
    flac = key_settings(job(), engine)
    mp3 = key_settings(job(deliver_format="mp3"), engine)
    mp3_320 = key_settings(job(deliver_format="mp3", mp3_bitrate=320), engine)
    assert len({flac, mp3, mp3_320}) == 3
    plain = {  # the settings a FLAC run was keyed by before delivery formats existed
        "iterations": 1, "engine": engine.name, "engine_version": engine.version,
        "prompt_mode": "chain", "llm_backend": "transformers", "vad_max_pause": 0.3,
        "models_dir": None, "qc": "none", "qc_heavy": False, "select": "last",
    }  # fmt: skip
    assert flac == _hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()


def test_a_resumed_run_republishes_a_lost_mp3_byte_for_byte(mp3_run) -> None:
    from stepedit_core.foundation.store import RunStore
    from stepedit_core.lifecycle.shard import ShardWriter, plan_rows

    runs, rows = mp3_run
    path = Path(rows[0]["output_uri"])
    original = path.read_bytes()
    path.unlink()  # a crash between the part's commit and the file's publication
    store = RunStore(str(runs), "mp3")
    plan = QcPlan(profile="acx", deliver_format="mp3")
    ShardWriter(store, 0, plan_rows(store, 0), plan)
    assert path.read_bytes() == original
