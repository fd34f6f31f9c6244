"""QC in a run: every round measured and checked against a delivery profile, the verdict and the
delivered round in the output manifest, best-round selection that the audit trail follows."""

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stepedit_core.audit import verify_run
from stepedit_core.demo import demo_clips
from stepedit_core.lifecycle.job import JobSpec

from conftest import run_inprocess, write_manifest


@pytest.fixture(scope="module")
def speech_manifest(tmp_path_factory):
    """Two of the real speech clips the package ships (a clean and a noisy line)."""
    folder = tmp_path_factory.mktemp("qc")
    clips = {c["clip_id"]: c for c in demo_clips()}
    rows = [
        {"clip_id": name, "audio_uri": str(clips[name]["path"])}
        for name in ("clean_01", "noisy_01")
    ]
    return folder, write_manifest(folder / "m.parquet", rows)


def _run(folder, manifest, run_id, **job):
    spec = JobSpec(manifest_uri=manifest, out=str(folder / "runs"), run_id=run_id, **job)
    run_inprocess(spec)
    run = folder / "runs" / run_id
    return (
        pq.read_table(run / "manifest.parquet").to_pylist(),
        pq.read_table(run / "iterations").to_pylist(),
    )


def test_acx_mastering_passes_acx_and_best_round_is_delivered(speech_manifest):
    folder, manifest = speech_manifest
    rows, records = _run(
        folder,
        manifest,
        "acx",
        edits=["vad", "loudness=acx"],
        iterations=2,
        executor="local",
        allow_roots=[str(Path(demo_clips()[0]["path"]).parent)],
        qc="acx",
        select="best",
    )
    for row in rows:
        assert row["status"] == "ok" and row["qc_status"] == "pass", row["qc_reasons"]
        assert row["selected_round"] in (1, 2) and "passing acx" in row["selection_reason"]
        chosen = next(
            r
            for r in records
            if r["clip_id"] == row["clip_id"] and r["iteration"] == row["selected_round"]
        )
        delivered = Path(row["output_uri"]).read_bytes()
        assert hashlib.sha256(delivered).hexdigest() == chosen["output_sha256"]
    for record in records:
        metrics = json.loads(record["qc_json"])["metrics"]
        assert record["qc_profile"] == "acx" and record["qc_pass"] is True
        assert -23 <= metrics["rms_dbfs"] <= -18 and metrics["peak_dbfs"] <= -3
        assert metrics["noise_floor_db"] <= -60
        assert 0.5 <= metrics["head_silence_s"] <= 1 and 1 <= metrics["tail_silence_s"] <= 5
        assert metrics["loudness_lufs"] is not None and metrics["true_peak_dbtp"] is not None
    report = verify_run(str(folder / "runs"), "acx")
    assert report.intact, report.text()


def test_a_profile_the_output_misses_fails_delivery_with_reasons(speech_manifest):
    folder, manifest = speech_manifest
    rows, records = _run(
        folder,
        manifest,
        "r128",
        edits=["loudness=-16"],
        executor="local",
        allow_roots=[str(Path(demo_clips()[0]["path"]).parent)],
        qc="r128",
    )
    for row in rows:
        assert row["status"] == "ok"  # delivered, and flagged: QC never drops a clip
        assert row["qc_status"] == "fail"
        assert "loudness_lufs" in row["qc_reasons"] and "-23" in row["qc_reasons"]
        assert row["selected_round"] == 1 and row["selection_reason"] is None  # --select last
    assert all(r["qc_pass"] is False for r in records)


def test_without_a_profile_metrics_are_measured_and_nothing_is_judged(speech_manifest):
    folder, manifest = speech_manifest
    rows, records = _run(
        folder,
        manifest,
        "none",
        edits=["loudness=-23"],
        executor="local",
        allow_roots=[str(Path(demo_clips()[0]["path"]).parent)],
    )
    assert all(r["qc_status"] is None for r in rows)
    for record in records:
        assert record["qc_pass"] is None and record["qc_profile"] == "none"
        metrics = json.loads(record["qc_json"])["metrics"]
        assert metrics["loudness_lufs"] == pytest.approx(-23, abs=0.5)
        assert metrics["duration_ratio"] == pytest.approx(1.0, abs=1e-3)
