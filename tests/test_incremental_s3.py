"""Incremental runs on S3 (moto over real HTTP): a re-uploaded object is edited again, an
unchanged one keeps its earlier hash through its ETag without being read."""

import io

import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.lifecycle.job import JobSpec

from conftest import put_clip, run_inprocess


def _job(run_id: str) -> JobSpec:
    return JobSpec(
        manifest_uri="s3://catalog/incr/m.parquet",
        out="s3://runs/incr",
        run_id=run_id,
        edits=["speed=1.25"],
        executor="local",
        incremental=True,
    )


def _rows(s3, run_id: str) -> list[dict]:
    with s3.open(f"runs/incr/{run_id}/manifest.parquet", "rb") as handle:
        return pq.read_table(handle).to_pylist()


def test_incremental_run_on_s3_redoes_only_the_reuploaded_clip(s3):
    uris = [put_clip(s3, f"catalog/incr/clips/{c}.flac", 0.6 + 0.1 * i) for i, c in enumerate("ab")]
    uris.append(put_clip(s3, "catalog/incr/clips/c.flac", 0.8))
    sink = io.BytesIO()
    pq.write_table(pa.table({"clip_id": list("abc"), "audio_uri": uris}), sink)
    s3.pipe("catalog/incr/m.parquet", sink.getvalue())

    first = run_inprocess(_job("i1"))
    assert first["counts"]["ok"] == 3 and first["incremental"]["sources_hashed"] == 3

    put_clip(s3, "catalog/incr/clips/b.flac", 0.9)  # new bytes, same key
    second = run_inprocess(_job("i2"))
    assert second["counts"]["ok"] == 3 and second["counts"]["reused"] == 2
    # a and c: their ETags match i1's hashes, so only b was read
    assert second["incremental"]["source_hashes_reused"] == 2
    assert second["incremental"]["sources_hashed"] == 1
    rows = {r["clip_id"]: r for r in _rows(s3, "i2")}
    assert rows["b"]["reused_from_run"] is None
    assert rows["b"]["output_uri"].startswith("s3://runs/incr/i2/audio/")
    first_rows = {r["clip_id"]: r for r in _rows(s3, "i1")}
    for clip in "ac":
        assert rows[clip]["reused_from_run"] == "i1"
        assert rows[clip]["output_uri"] == first_rows[clip]["output_uri"]
        assert s3.exists(rows[clip]["output_uri"])
