"""The S3 endpoint goes away for a few seconds in the middle of a run (the moto server is stopped
and started again on the same port; moto keeps its buckets in the process): every object-store
call, clip reads included, waits it out with backoff and the run completes with nothing lost."""

from __future__ import annotations

import time

import fsspec
import pytest
from durability import check_finished_run, cli_env, output, reap, run_args, s3_catalog, start
from moto.server import ThreadedMotoServer

from conftest import free_port

CLIPS = 100
SHARD_SIZE = 25  # 4 shards: three are left when the outage starts
# botocore's own retries are turned off (AWS_MAX_ATTEMPTS=1): they would bridge most short
# outages by themselves, and this test is about the product's backoff
# (stepedit_core/foundation/retry.py: waits of 0.5, 1, 2, 4, 8... s), which the run's log shows.
OUTAGE_S = 4.0


def serve(port: int) -> ThreadedMotoServer:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    return server


@pytest.mark.slow
def test_run_survives_the_endpoint_going_away_for_a_few_seconds(monkeypatch):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    aws = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    for name, value in aws.items():
        monkeypatch.setenv(name, value)
    server = serve(port)
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True, endpoint_url=endpoint)
        for bucket in ("outage-catalog", "outage-runs"):
            if not fs.exists(bucket):
                fs.mkdir(bucket)
        manifest = s3_catalog(fs, "outage-catalog/clips", CLIPS)
        out = "s3://outage-runs/runs"
        # the outage starts once the first shard is committed; no review page: it is built
        # after run.json, once the endpoint is back, and nothing here reads it
        args = run_args(manifest, out, "blip", "--shard-size", str(SHARD_SIZE), "--report", "none")
        proc = start(args, cli_env({**aws, "AWS_MAX_ATTEMPTS": "1"}))
        deadline = time.monotonic() + 120
        while not fs.exists("outage-runs/runs/blip/_work/results/shard-00000.parquet"):
            assert proc.poll() is None, output(proc)
            assert time.monotonic() < deadline, "the first shard never finished"
            time.sleep(0.2)
            fs.invalidate_cache()
        server.stop()
        time.sleep(OUTAGE_S)
        still_running = proc.poll() is None
        server = serve(port)
        try:
            proc.wait(timeout=300)  # a hang guard, with room for a loaded 2-core machine
        finally:
            reap(proc)
        assert still_running, "the run ended during the outage"
        assert proc.returncode == 0, output(proc)[1]
        record = check_finished_run(out, "blip", CLIPS, 1)
        assert record["counts"]["ok"] == CLIPS and record["attempt"] == 1
        logs = fs.find("outage-runs/runs/blip/_work/logs/")
        assert logs, "the run uploaded no log"
        assert any(b"; retrying in " in fs.cat(key) for key in logs), "no retry was logged"
    finally:
        server.stop()
