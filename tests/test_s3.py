"""Manifest, clips and run outputs in S3, against moto's S3 server over real HTTP."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stepedit_core.lifecycle.job import JobSpec

from conftest import put_clip, run_inprocess


def test_run_reads_and_writes_s3(s3):
    uris = [
        put_clip(s3, "catalog/clips/a.flac", 0.8),
        put_clip(s3, "catalog/clips/b.flac", 0.5),
        "s3://catalog/clips/missing.flac",
    ]
    sink = io.BytesIO()
    pq.write_table(pa.table({"clip_id": ["a", "b", "c"], "audio_uri": uris}), sink)
    s3.pipe("catalog/m.parquet", sink.getvalue())

    job = JobSpec(
        manifest_uri="s3://catalog/m.parquet",
        out="s3://runs/nightly",
        run_id="s3-01",
        edits=["speed=1.25"],
        iterations=2,
        executor="local",
    )
    record = run_inprocess(job)

    assert record["counts"]["ok"] == 2 and record["counts"]["failed"] == 1
    with s3.open("runs/nightly/s3-01/manifest.parquet", "rb") as handle:
        rows = pq.read_table(handle).to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"]
    assert rows[2]["error_code"] == "missing_file"
    assert rows[0]["output_uri"].startswith("s3://runs/nightly/s3-01/audio/")
    audio, rate = sf.read(io.BytesIO(s3.cat(rows[0]["output_uri"])))
    assert len(audio) / rate == pytest.approx(0.8 * 0.64, rel=0.03)
    parts = s3.ls("runs/nightly/s3-01/iterations")
    assert parts and all(p.endswith(".parquet") for p in parts)
    assert record["outputs"]["manifest"] == "s3://runs/nightly/s3-01/manifest.parquet"
