"""End to end through the real Prefect flow (a local test server) and a real local Ray."""

import json
import subprocess
import sys

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from work_items import round_channels_gone

from stepedit_flows.cli import main

from conftest import write_clip, write_manifest

pytestmark = pytest.mark.slow


def test_demo_runs_through_prefect_and_ray(tmp_path, prefect_server, ray_cluster, capsys):
    code = main(["demo", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    run = tmp_path / "demo"
    record = json.loads((run / "run.json").read_text())
    assert record["counts"]["ok"] == record["counts"]["rows"] == 8
    assert record["parameters"]["executor"] == "ray"
    manifest = pq.read_table(run / "manifest.parquet").to_pylist()
    assert all(r["status"] == "ok" and r["iterations_done"] == 2 for r in manifest)
    assert {r["edit"] for r in manifest} == {
        "denoise;loudness=-23",
        "vad;loudness=acx",
        "speed=faster;loudness=-23",
    }
    iterations = ds.dataset(run / "iterations", format="parquet").to_table()
    assert iterations.num_rows == 16
    assert "8 ok, 0 failed" in out
    assert round_channels_gone()  # the run's round channel ended with it

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["stepedit-run-demo"]))
        )
    assert artifacts and "| 8 | 8 | 0 | 0 | 1 |" in artifacts[0].data  # the run summary table


def test_run_with_bad_rows_finishes_and_reports(tmp_path, prefect_server, ray_cluster, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [
            {"clip_id": "a", "audio_uri": write_clip(clips / "a.wav", 0.8)},
            {"clip_id": "b", "audio_uri": str(clips / "missing.wav")},
            {"clip_id": "c", "audio_uri": write_clip(clips / "c.wav", 0.6), "edit": "style=news"},
        ],
    )
    args = [
        "run",
        manifest,
        "--out",
        str(tmp_path / "runs"),
        "--run-id",
        "nightly-01",
        "--edit",
        "speed=faster",
        "--iterations",
        "2",
        "--shard-size",
        "2",
    ]
    assert main(args) == 1  # the run finished and some rows failed
    out = capsys.readouterr().out
    assert "1 ok, 2 failed" in out and "missing_file: 1" in out and "unsupported_edit: 1" in out
    assert "2 failed rows: their failure records" in out and "status 'failed'" in out
    rows = pq.read_table(tmp_path / "runs/nightly-01/manifest.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    audio, rate = sf.read(rows[0]["output_uri"])
    assert len(audio) / rate == pytest.approx(0.8 * 0.64, rel=0.03)
    # a finished run id is not silently overwritten: a rerun does nothing and says so
    before = (tmp_path / "runs/nightly-01/run.json").read_bytes()
    assert main(args) == 1  # the finished run's status
    assert "already finished" in capsys.readouterr().out
    assert (tmp_path / "runs/nightly-01/run.json").read_bytes() == before


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "stepedit_flows.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "demo" in result.stdout
