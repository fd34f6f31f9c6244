"""The run steps end to end in-process (no Prefect, local executor): outputs, failures, records."""

import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.job import JobSpec

from conftest import run_inprocess, tone, write_clip, write_manifest


@pytest.fixture()
def catalog(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "empty.wav").write_bytes(b"")
    (clips / "text.wav").write_text("this is not audio")
    nan = tone(0.5)
    nan[100] = np.nan
    sf.write(clips / "nan.wav", nan, 24000, subtype="FLOAT")
    rows = [
        {"clip_id": "ok-1", "audio_uri": write_clip(clips / "a.wav", 1.2), "owner": "x"},
        {
            "clip_id": "stereo-8k",
            "audio_uri": write_clip(clips / "b.wav", 1.0, rate=8000, channels=2),
        },
        {"clip_id": "missing", "audio_uri": str(clips / "nope.wav")},
        {"clip_id": "empty", "audio_uri": str(clips / "empty.wav")},
        {"clip_id": "text", "audio_uri": str(clips / "text.wav")},
        {"clip_id": "nan", "audio_uri": str(clips / "nan.wav")},
        {"clip_id": "ok-1", "audio_uri": str(clips / "a.wav")},
        {
            "clip_id": "ok-2",
            "audio_uri": write_clip(clips / "c.wav", 0.8, f0=220),
            "edit": "loudness=-20",
        },
    ]
    return write_manifest(tmp_path / "catalog.parquet", rows)


def test_run_writes_every_row_and_every_round(tmp_path, catalog):
    job = JobSpec(
        manifest_uri=catalog,
        out=str(tmp_path / "runs"),
        run_id="r1",
        edits=["speed=1.25", "loudness=-23"],
        iterations=2,
        executor="local",
        shard_size=3,
    )
    record = run_inprocess(job)
    store = RunStore(job.out, job.run_id)

    manifest = pq.read_table(store.manifest).to_pylist()
    assert [r["clip_id"] for r in manifest] == [
        "ok-1",
        "stereo-8k",
        "missing",
        "empty",
        "text",
        "nan",
        "ok-1",
        "ok-2",
    ]
    by_row = dict(enumerate(manifest))
    assert by_row[0]["owner"] == "x"  # extra columns pass through
    codes = {i: r["error_code"] for i, r in by_row.items()}
    assert codes == {
        0: None,
        1: None,
        2: "missing_file",
        3: "empty_file",
        4: "not_audio",
        5: "non_finite_samples",
        6: "duplicate_clip_id",
        7: None,
    }
    for i in (0, 1, 7):
        assert by_row[i]["status"] == "ok" and by_row[i]["iterations_done"] == 2
        audio, rate = sf.read(by_row[i]["output_uri"], always_2d=True)
        assert audio.shape[0] > 0
    for i in (2, 3, 4, 5, 6):
        assert by_row[i]["status"] == "failed" and by_row[i]["output_uri"] is None
        assert by_row[i]["error"]

    # unusual but valid audio keeps its shape: 8 kHz stereo in, 8 kHz stereo out
    out, rate = sf.read(by_row[1]["output_uri"], always_2d=True)
    assert rate == 8000 and out.shape[1] == 2
    # speed=1.25 twice: duration x 0.8 x 0.8
    assert out.shape[0] / 8000 == pytest.approx(1.0 * 0.64, rel=0.03)

    iterations = ds.dataset(store.iterations_dir, format="parquet").to_table().to_pylist()
    assert sorted((r["clip_id"], r["iteration"]) for r in iterations) == [
        ("ok-1", 1),
        ("ok-1", 2),
        ("ok-2", 1),
        ("ok-2", 2),
        ("stereo-8k", 1),
        ("stereo-8k", 2),
    ]
    for clip in ("ok-1", "ok-2", "stereo-8k"):
        r1, r2 = sorted(
            (r for r in iterations if r["clip_id"] == clip), key=lambda r: r["iteration"]
        )
        assert r2["input_sha256"] == r1["output_sha256"]  # round 2 edits round 1's output
        assert r1["key"] != r2["key"]
        assert r1["status"] == "ok" and r1["engine"] == "signal"
        # every round listenable, from the object its record references (no bytes inside)
        assert r1["audio_flac"] is None
        assert r1["audio_ref"] == f"round-audio/{r1['output_sha256']}.flac"
        flac, _ = sf.read(Path(store.root) / r1["audio_ref"])
        assert len(flac) == r1["frames"] > 0
    assert next(r for r in iterations if r["clip_id"] == "ok-2")["edit"] == "loudness=-20"
    # the delivered file is byte for byte the last round's audio
    last = next(r for r in iterations if r["clip_id"] == "ok-1" and r["iteration"] == 2)
    delivered = Path(by_row[0]["output_uri"]).read_bytes()
    assert hashlib.sha256(delivered).hexdigest() == last["output_sha256"]

    assert record["counts"] == {
        "rows": 8,
        "ok": 3,
        "failed": 5,
        "refused_at_plan": 1,
        "reused": 0,
        "shards": 3,
    }
    run_json = json.loads(Path(store.run_json).read_text())
    assert run_json["input_manifest"]["sha256"] == record["input_manifest"]["sha256"]
    assert run_json["engine"]["name"] == "signal"
    assert run_json["errors_by_code"]["missing_file"] == 1


def test_outputs_open_in_duckdb(tmp_path, catalog):
    job = JobSpec(
        manifest_uri=catalog,
        out=str(tmp_path / "runs"),
        run_id="r2",
        edits=["denoise"],
        executor="local",
    )
    run_inprocess(job)
    store = RunStore(job.out, job.run_id)
    con = duckdb.connect()
    status = dict(
        con.execute(
            f"select status, count(*) from read_parquet('{store.manifest}') group by status"
        ).fetchall()
    )
    assert status == {"ok": 3, "failed": 5}
    rounds = con.execute(
        f"select count(*), min(iteration) from read_parquet('{store.iterations_dir}/*.parquet')"
    ).fetchone()
    assert rounds == (3, 1)


def test_overwrite_of_a_run_id_starts_clean(tmp_path, catalog):
    job = JobSpec(
        manifest_uri=catalog,
        out=str(tmp_path / "runs"),
        run_id="r3",
        edits=["denoise"],
        executor="local",
        shard_size=1,
    )
    run_inprocess(job)
    run_inprocess(job.model_copy(update={"shard_size": 5, "overwrite": True}))
    store = RunStore(job.out, job.run_id)
    table = ds.dataset(store.iterations_dir, format="parquet").to_table()
    assert table.num_rows == 3  # the first attempt's parts are gone, no duplicates
