"""`stepedit deploy` end to end: a real Prefect server and a process worker as subprocesses,
a deployment registered through the CLI, runs triggered through the Prefect API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from stepedit_flows.cli import main

from conftest import write_clip, write_manifest

pytestmark = pytest.mark.slow

POOL = "stepedit-test"
PREFECT = [sys.executable, "-m", "prefect"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _background(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A subprocess in its own process group; the group is ended however the test ends."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server not healthy after {seconds} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server on a free port with its own PREFECT_HOME, a process work pool and a worker
    polling it every second; yields the API URL with this process's settings pointed at it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.workers.process import ProcessWorker

    tmp_path = tmp_path_factory.mktemp("prefect")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    host, port = url.removeprefix("http://").removesuffix("/api").split(":")
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    with ExitStack() as stack:
        server = stack.enter_context(
            _background(
                [*PREFECT, "server", "start", "--host", host, "--port", port], env, server_log
            )
        )
        _wait_healthy(url, server, server_log)
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        with get_client(sync_client=True) as client:
            client.create_work_pool(
                WorkPoolCreate(
                    name=POOL,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )
        stack.enter_context(
            _background(
                [*PREFECT, "worker", "start", "--pool", POOL, "--type", "process"],
                env,
                worker_log,
            )
        )
        try:
            yield url
        except BaseException:
            print("worker log:\n", worker_log.read_text()[-4000:])
            raise


def _wait_final(flow_run_ids: list, seconds: float = 75) -> dict:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + seconds
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = {i: client.read_flow_run(i) for i in flow_run_ids}
            if all(r.state and r.state.is_final() for r in runs.values()):
                return runs
            time.sleep(1)
    states = {str(i): r.state.name if r.state else None for i, r in runs.items()}
    raise TimeoutError(f"flow runs not finished after {seconds} s: {states}")


def _catalog(tmp_path: Path) -> tuple[str, list[dict]]:
    clips = tmp_path / "clips"
    clips.mkdir()
    good = [
        {"clip_id": f"c{i}", "audio_uri": write_clip(clips / f"c{i}.wav", 1.0, rate=16000)}
        for i in range(2)
    ]
    return write_manifest(tmp_path / "catalog.parquet", good), good


def test_deploy_schedule_trigger_and_list(tmp_path, prefect_stack, capsys):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    manifest, good = _catalog(tmp_path)
    clips = tmp_path / "clips"
    grown = write_manifest(
        tmp_path / "grown.parquet",
        [*good, {"clip_id": "gone", "audio_uri": str(clips / "gone.wav")}],
    )
    out = tmp_path / "runs"
    deploy = ["deploy", "--name", "nightly", "--manifest", manifest, "--out", str(out)]
    deploy += ["--edit", "loudness=-23", "--executor", "local", "--work-pool", POOL]

    # refused at deploy time by the checks that refuse a run: nothing is registered
    assert main([*deploy, "--cron", "0 2 * * *", "--engine", "nope"]) == 2
    assert "unknown engine" in capsys.readouterr().err
    assert main([*deploy, "--cron", "not a cron"]) == 2
    assert "bad schedule" in capsys.readouterr().err
    assert main([*deploy, "--cron", "0 2 * * *", "--work-pool", "absent"]) == 2
    assert "work pool 'absent' does not exist" in capsys.readouterr().err

    # registering twice updates the deployment: one deployment, the second schedule only
    assert main([*deploy, "--cron", "30 1 * * *"]) == 0
    assert main([*deploy, "--cron", "0 2 * * *"]) == 0
    assert "scheduled_edit_catalog/nightly" in capsys.readouterr().out

    # two API-triggered runs for the same second (one on a catalog with a missing file) must
    # write two run folders, not one
    when = datetime.now(timezone.utc).replace(microsecond=0)
    name = "scheduled_edit_catalog/nightly"
    with get_client(sync_client=True) as client:
        job = client.read_deployment_by_name(name).parameters["job"]
    plain = run_deployment(name, timeout=0, scheduled_time=when)
    failing = run_deployment(
        name, timeout=0, scheduled_time=when, parameters={"job": {**job, "manifest_uri": grown}}
    )
    runs = _wait_final([plain.id, failing.id])

    stamp = f"nightly-{when:%Y%m%dT%H%M%SZ}-"
    ok_run, bad_run = runs[plain.id], runs[failing.id]
    assert ok_run.name.startswith(stamp) and bad_run.name.startswith(stamp)
    assert ok_run.name != bad_run.name

    assert ok_run.state.type.value == "COMPLETED", ok_run.state.message
    record = json.loads((out / ok_run.name / "run.json").read_text())
    assert record["counts"]["ok"] == record["counts"]["rows"] == 2
    rows = pq.read_table(out / ok_run.name / "manifest.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(Path(r["output_uri"]).is_file() for r in rows)

    # a partly failed run is a Failed flow run, with its outputs written and counts in the message
    assert bad_run.state.type.value == "FAILED"
    assert "2 ok, 1 failed (missing_file: 1)" in bad_run.state.message
    bad_record = json.loads((out / bad_run.name / "run.json").read_text())
    assert bad_record["counts"] == {**bad_record["counts"], "ok": 2, "failed": 1, "rows": 3}
    bad_rows = pq.read_table(out / bad_run.name / "manifest.parquet").to_pylist()
    assert [r["error_code"] for r in bad_rows] == [None, None, "missing_file"]

    assert main(["deployments", "--json"]) == 0
    (listed,) = [d for d in json.loads(capsys.readouterr().out) if d["name"] == "nightly"]
    assert listed["work_pool"] == POOL
    assert listed["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC", "active": True}]
    last = listed["last_run"]
    assert last["name"].startswith(stamp)
    last_record = json.loads((out / last["name"] / "run.json").read_text())
    assert last["counts"]["ok"] == last_record["counts"]["ok"]
    assert last["counts"]["failed"] == last_record["counts"]["failed"]
    assert last["state"] == ("Failed" if last_record["counts"]["failed"] else "Completed")

    assert main(["deployments"]) == 0
    text = capsys.readouterr().out
    assert 'nightly: "0 2 * * *" (UTC)' in text and f"last run {last['name']}" in text


def test_prefect_yaml_deploys_and_runs(tmp_path, prefect_stack):
    """`prefect deploy` with the repository's prefect.yaml registers a deployment whose runs
    import the flow from the installed package and take their run-id prefix from its name."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    manifest, _ = _catalog(tmp_path)
    out = tmp_path / "runs"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_stack,
        "STEPEDIT_MANIFEST": manifest,
        "STEPEDIT_OUT": str(out),
    }
    result = subprocess.run(
        [*PREFECT, "--no-prompt", "deploy", "--name", "nightly-loudness", "--pool", POOL],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    name = "scheduled_edit_catalog/nightly-loudness"
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(name)
    assert deployment.parameters["job"]["manifest_uri"] == manifest
    assert deployment.pull_steps in (None, [])
    assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]

    # the YAML asks for the Ray executor; this run swaps in the in-process one
    job = {**deployment.parameters["job"], "executor": "local"}
    run = run_deployment(name, parameters={"job": job}, timeout=0)
    (done,) = _wait_final([run.id]).values()
    assert done.state.type.value == "COMPLETED", done.state.message
    assert done.name.startswith("nightly-loudness-")
    record = json.loads((out / done.name / "run.json").read_text())
    assert record["counts"]["ok"] == 2 and record["parameters"]["edits"] == [
        "denoise",
        "loudness=ebu",
    ]
