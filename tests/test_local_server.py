"""The local Prefect server: a run with no PREFECT_API_URL starts one when none runs, runs that
start at once share one, later runs reuse it, it stops itself once idle (when a run started it)
or on `stepedit server stop`; a stale state file is never used or acted on."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest

from stepedit_flows import local_server

from conftest import write_clip, write_manifest

# a process that takes the local server as a run does, prints it and holds it until stdin closes
USER = """
import json, sys
from stepedit_flows import local_server
url = local_server.use_for_this_run()
local_server.wait_until_ready()
print(json.dumps({"url": url, "pid": json.loads(local_server.state_file().read_text())["pid"]}))
sys.stdout.flush()
sys.stdin.read()
"""


def _env(tmp_path, **extra: str) -> dict[str, str]:
    """A user's environment with a Prefect home of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "STEPEDIT_"))}
    return dict(
        env, PREFECT_HOME=str(tmp_path / "prefect"), RAY_ACCEPT_ONNX_IN_WORKERS="1", **extra
    )


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


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_for(condition, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_a_stale_state_file_is_neither_used_nor_acted_on(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = {"pid": gone.pid, "created": 0, "api_url": "http://127.0.0.1:9/api", "started": 0}
    local_server.state_file().write_text(json.dumps(stale))
    assert local_server.running() is None
    # a live process that is not the keeper (its pid reused: another start time) is left alone
    stale["pid"] = os.getpid()
    local_server.state_file().write_text(json.dumps(stale))
    assert local_server.running() is None
    assert local_server.stop() is None
    assert not local_server.state_file().exists()


def test_a_configured_or_temporary_server_means_no_local_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv(local_server.MODE_ENV, "temporary")
    assert local_server.use_for_this_run() is None
    monkeypatch.setenv(local_server.MODE_ENV, "auto")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    assert local_server.use_for_this_run() is None
    assert not local_server.state_file().exists()  # nothing was started
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv(local_server.MODE_ENV, "always")
    with pytest.raises(ValueError, match="STEPEDIT_PREFECT_SERVER must be 'auto' or 'temporary'"):
        local_server.use_for_this_run()
    monkeypatch.setenv(local_server.IDLE_ENV, "soon")
    with pytest.raises(ValueError, match="STEPEDIT_SERVER_IDLE_S must be a number"):
        local_server.idle_stop_s()


@pytest.mark.slow
def test_runs_share_one_server_that_outlives_them_until_idle_or_stopped(tmp_path):
    # a short idle time: the users below hold the server until the test lets it idle out
    env = _env(tmp_path, STEPEDIT_PREFECT_SERVER="auto", STEPEDIT_SERVER_IDLE_S="1")
    # two runs' worth of users start at once on a fresh Prefect home: one server between them
    users = [
        subprocess.Popen(
            [sys.executable, "-c", USER],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    try:
        chosen = [json.loads(user.stdout.readline()) for user in users]
        assert chosen[0] == chosen[1], chosen
        pid, api_url = chosen[0]["pid"], chosen[0]["url"]
        state = tmp_path / "prefect" / local_server.FILES.path("json").name
        assert json.loads(state.read_text())["pid"] == pid and not _gone(pid)
        # a run while they hold it reuses it and records its flow run there
        clips = tmp_path / "clips"
        clips.mkdir()
        clip = write_clip(clips / "a.wav", 0.6)
        manifest = write_manifest(clips / "m.parquet", [{"clip_id": "a", "audio_uri": clip}])
        run = [
            "run", manifest, "--out", str(tmp_path / "out"), "--run-id", "on-server",
            "--edit", "speed=faster", "--executor", "local",
        ]  # fmt: skip
        done = _stepedit(env, *run)
        assert done.returncode == 0, done.stderr
        assert "on-server" in _flow_run_names(api_url)
        log = done.stdout.splitlines()[-1].removeprefix("log: ")
        with open(log) as handle:
            assert "Starting temporary server" not in handle.read()
        status = _stepedit(env, "server", "status")
        assert status.returncode == 0 and f"pid {pid}" in status.stdout  # outlived the run
    finally:
        for user in users:
            user.communicate("")
    # no user left: the server a run started stops itself after its idle time
    assert _wait_for(lambda: _gone(pid) and not state.exists(), timeout_s=90)
    # `stepedit server start` starts one that never idles out; `server stop` stops it
    started = _stepedit(env, "server", "start")
    assert started.returncode == 0, started.stderr
    kept = json.loads(state.read_text())
    assert kept["idle_stop_s"] == 0 and kept["api_url"] in started.stdout
    again = _stepedit(env, "server", "start")
    assert again.returncode == 0 and "already running" in again.stdout
    stopped = _stepedit(env, "server", "stop")
    assert stopped.returncode == 0 and f"pid {kept['pid']}" in stopped.stdout
    status = _stepedit(env, "server", "status")
    assert status.returncode == 1 and "no server running" in status.stdout
    assert _gone(kept["pid"])
