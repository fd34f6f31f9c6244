"""Delivery of round audio that travels by reference, in blocks: a long clip's MP3 is encoded
from the round's object and measured as decoded without the round being read whole, with the
same bytes and verdict as the in-memory path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stepedit_core.audit import verify_run
from stepedit_core.engines.signal import mastering
from stepedit_core.foundation.audio import Audio, decode, encode_flac
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.quality.delivered_files import package, package_file
from stepedit_core.quality.delivery import QcPlan
from stepedit_core.quality.encoding import mp3_bitrates

from conftest import run_inprocess, write_manifest
from signal_fixtures import narration

RATE = 44100


def test_a_round_file_delivers_the_same_mp3_and_verdict_in_blocks_as_in_memory(
    tmp_path: Path,
) -> None:
    mastered = mastering.normalize(narration(12.0, RATE, crest_db=20.0, seed=5), RATE, "acx")
    flac = encode_flac(Audio(mastered, RATE))
    source = tmp_path / "round.flac"
    source.write_bytes(flac)
    plan = QcPlan(profile="acx", deliver_format="mp3")

    def path_for(ext: str, part: int | None) -> str:
        assert part is None
        return f"clip.{ext}"

    in_memory = package(flac, path_for, plan)
    in_blocks = package_file(str(source), tmp_path / "scratch", path_for, plan)
    (memory_file,) = in_memory.files
    (block_file,) = in_blocks.files
    assert isinstance(block_file.data, Path) and block_file.data.parent == tmp_path / "scratch"
    assert block_file.path == memory_file.path == "clip.mp3"
    assert block_file.sha256 == memory_file.sha256  # the same encoder fed the same samples
    assert block_file.trim_db == memory_file.trim_db
    assert block_file.end_s == pytest.approx(memory_file.end_s, abs=0.05)
    assert in_blocks.qc_pass == in_memory.qc_pass
    assert source.read_bytes() == flac  # the round's own file is left as it was


@pytest.mark.slow
def test_a_long_chapter_by_reference_is_delivered_as_a_checked_mp3_that_verify_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 15 s, so the source and every round travel by reference."""
    from stepedit_core.lifecycle import shard

    def whole(*args, **kwargs):
        raise AssertionError("a referenced round was decoded whole for delivery")

    monkeypatch.setattr(shard, "package", whole)
    chapter = tmp_path / "chapter.flac"
    sf.write(chapter, narration(20.0, RATE, crest_db=20.0, seed=11), RATE, subtype="PCM_24")
    manifest = write_manifest(
        tmp_path / "book.parquet", [{"clip_id": "chapter", "audio_uri": str(chapter)}]
    )
    spec = JobSpec(
        manifest_uri=manifest,
        out=str(tmp_path / "runs"),
        run_id="book",
        edits=["loudness=acx"],
        executor="local",
        allow_roots=[str(tmp_path)],
        qc="acx",
        deliver_format="mp3",
        report="none",
    )
    run_inprocess(spec)
    (row,) = pq.read_table(tmp_path / "runs" / "book" / "manifest.parquet").to_pylist()
    assert row["status"] == "ok" and row["output_uri"].endswith(".mp3")
    assert row["qc_status"] == "pass", row["qc_reasons"]
    data = Path(row["output_uri"]).read_bytes()
    assert mp3_bitrates(data) == {192}
    decoded = decode(data)
    assert decoded.sample_rate == RATE and decoded.channels == 1
    assert 20.0 <= decoded.duration <= 26.0  # mastering may lengthen head and tail room tone
    peak = 20 * np.log10(float(np.abs(decoded.samples).max()))
    assert peak <= -3.0  # ACX's sample peak, measured on the decoded file
    assert not list(Path(row["output_uri"]).parent.glob(".*tmp*"))
    (entry,) = json.loads(row["delivered_files"])
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    report = verify_run(str(tmp_path / "runs"), "book")
    assert report.intact, report.text()
    assert report.checked["delivered files"] == 1


def test_a_clip_over_the_limit_is_split_in_blocks_as_in_memory(tmp_path: Path) -> None:
    """ACX's 120 minutes lowered to 20 s: the same parts, cut at the same pauses, each with
    its head and tail of room tone, and the same verdict."""
    mastered = mastering.normalize(narration(50.0, RATE, crest_db=20.0, seed=4), RATE, "acx")
    flac = encode_flac(Audio(mastered, RATE))
    source = tmp_path / "round.flac"
    source.write_bytes(flac)
    plan = QcPlan(profile="acx", deliver_format="mp3")

    def path_for(ext: str, part: int | None) -> str:
        return f"clip.part{part:02d}.{ext}"

    in_memory = package(flac, path_for, plan, max_duration_s=20.0)
    in_blocks = package_file(str(source), tmp_path / "s", path_for, plan, max_duration_s=20.0)
    assert len(in_memory.files) >= 3
    assert [f.path for f in in_blocks.files] == [f.path for f in in_memory.files]
    assert [(f.start_s, f.end_s) for f in in_blocks.files] == [
        (f.start_s, f.end_s) for f in in_memory.files
    ]
    assert in_memory.qc_pass, in_memory.qc_reasons
    assert in_blocks.qc_pass, in_blocks.qc_reasons
    for blocks, memory in zip(in_blocks.files, in_memory.files, strict=True):
        assert isinstance(blocks.data, Path)
        ours, theirs = decode(blocks.data.read_bytes()), decode(memory.data)
        assert ours.duration == pytest.approx(theirs.duration, abs=0.03)
        assert ours.duration <= 20.0
        rms = [20 * np.log10(np.sqrt(np.mean(a.samples**2))) for a in (ours, theirs)]
        assert rms[0] == pytest.approx(rms[1], abs=0.1)
    assert not list((tmp_path / "s").glob("*.wav"))  # the parts' scratch files are removed
