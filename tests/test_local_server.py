"""`stepedit server start|stop|status`: a local Prefect server that later runs use instead of
starting a temporary server of their own; a stale state file is never used or acted on."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from stepedit_flows import local_server

from conftest import write_clip, write_manifest


def _env(tmp_path) -> dict[str, str]:
    """A user's environment with a Prefect home of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return dict(env, PREFECT_HOME=str(tmp_path / "prefect"), RAY_ACCEPT_ONNX_IN_WORKERS="1")


def _stepedit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "stepedit_flows.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _flow_run_names(api_url: str) -> list[str]:
    request = urllib.request.Request(
        f"{api_url}/flow_runs/filter",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return [run["name"] for run in json.loads(response.read())]


def test_a_stale_state_file_is_neither_used_nor_acted_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = {"pid": gone.pid, "api_url": "http://127.0.0.1:9/api", "started": 0}
    local_server.state_file().write_text(json.dumps(stale))
    assert local_server.running() is None
    assert local_server.use_for_this_run() is None and "PREFECT_API_URL" not in os.environ
    # a live process that does not answer as the server (its pid reused) is left alone
    stale["pid"] = os.getpid()
    local_server.state_file().write_text(json.dumps(stale))
    assert local_server.stop() is None
    assert not local_server.state_file().exists()


@pytest.mark.slow
def test_runs_use_the_started_server_until_it_is_stopped(tmp_path):
    env = _env(tmp_path)
    clips = tmp_path / "clips"
    clips.mkdir()
    manifest = write_manifest(
        clips / "m.parquet", [{"clip_id": "a", "audio_uri": write_clip(clips / "a.wav", 0.6)}]
    )
    started = _stepedit(env, "server", "start")
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads((tmp_path / "prefect" / local_server.STATE_NAME).read_text())
        assert state["api_url"] in started.stdout
        again = _stepedit(env, "server", "start")
        assert again.returncode == 0 and "already running" in again.stdout
        run = [
            "run", manifest, "--out", str(tmp_path / "out"), "--run-id", "on-server",
            "--edit", "speed=faster", "--executor", "local",
        ]  # fmt: skip
        done = _stepedit(env, *run)
        assert done.returncode == 0, done.stderr
        assert "on-server" in _flow_run_names(state["api_url"])  # recorded on that server
        log = done.stdout.splitlines()[-1].removeprefix("log: ")
        with open(log) as handle:
            assert "Starting temporary server" not in handle.read()
        assert _stepedit(env, "server", "status").returncode == 0  # the run left it running
    finally:
        stopped = _stepedit(env, "server", "stop")
    assert stopped.returncode == 0 and f"pid {state['pid']}" in stopped.stdout
    status = _stepedit(env, "server", "status")
    assert status.returncode == 1 and "no server running" in status.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
