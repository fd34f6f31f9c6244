"""A real `stepedit run` stopped mid-run: SIGTERM ends it cleanly; after SIGKILL nothing it started
(Prefect's temporary server, a local Ray) outlives it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import shared_server_env, write_clip, write_manifest

CLIPS = 150
SHARD_SIZE = 50
STARTUP_TIMEOUT_S = 180  # Prefect's server and Ray start on a loaded 2-core machine
# a stop takes about 2-7 s (benchmarks/stops.py); a run that waits on Prefect's client retries takes
# about a minute: the bound tells the two apart with room for a loaded 2-core machine
STOP_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("catalog")
    rows = [
        {
            "clip_id": f"c{i:03d}",
            "audio_uri": write_clip(folder / f"c{i:03d}.wav", 0.5, 16000, seed=i),
        }
        for i in range(CLIPS)
    ]
    return Path(write_manifest(folder / "catalog.parquet", rows))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return {
        **os.environ,
        "RAY_ACCEPT_ONNX_IN_WORKERS": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "RAY_AUTH_MODE": "disabled",
        # a Prefect database of its own, shared by this module's runs (created once)
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-home")),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }


def start_run(
    catalog: Path, out: Path, executor: str, env: dict[str, str], **popen: object
) -> subprocess.Popen:
    args = [sys.executable, "-m", "stepedit_flows.cli", "run", str(catalog), "--out", str(out)]
    args += ["--run-id", "r", "--edit", "denoise", "--shard-size", str(SHARD_SIZE)]
    return subprocess.Popen(
        [*args, "--executor", executor],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def wait_for_first_part(run: subprocess.Popen, out: Path) -> None:
    """Mid-run: the first shard's records are written and more shards are to come."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not list((out / "r" / "iterations").glob("shard-00000-part-*.parquet")):
        assert run.poll() is None, f"run ended early:\n{run.stdout.read()}"
        assert time.monotonic() < deadline, "no shard finished in time"
        time.sleep(0.1)


def started_by(run: subprocess.Popen) -> dict[int, tuple[float, str]]:
    """Every process the run started: pid -> (start time, command), for survivor checks."""
    found = {}
    for proc in psutil.Process(run.pid).children(recursive=True):
        try:
            found[proc.pid] = (proc.create_time(), " ".join(proc.cmdline())[:120])
        except psutil.Error:
            continue
    return found


def survivors(started: dict[int, tuple[float, str]]) -> list[str]:
    alive = []
    for pid, (created, command) in started.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01 and proc.status() != "zombie":
                alive.append(f"{pid} {command}")
        except psutil.Error:
            continue
    return alive


def wait_for_none(started: dict[int, tuple[float, str]], timeout: float) -> float:
    """Seconds until none of `started` runs; fails naming the survivors after `timeout`."""
    begin = time.monotonic()
    while survivors(started) and time.monotonic() - begin < timeout:
        time.sleep(0.25)
    left = survivors(started)
    assert not left, f"still running {timeout:.0f} s later:\n" + "\n".join(left)
    return time.monotonic() - begin


def kill_all(run: subprocess.Popen, started: dict[int, tuple[float, str]]) -> None:
    """Never leave a failed test's processes behind."""
    if run.poll() is None:
        run.kill()
        run.wait()
    for pid in (int(line.split()[0]) for line in survivors(started)):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_stops_quickly_records_where_and_leaves_nothing(catalog, env, tmp_path):
    out = tmp_path / "out"
    run = start_run(catalog, out, "local", env)
    started: dict[int, tuple[float, str]] = {}
    try:
        wait_for_first_part(run, out)
        started = started_by(run)
        assert any("uvicorn" in command for _, command in started.values())  # Prefect's server
        signalled = time.monotonic()
        run.send_signal(signal.SIGTERM)
        output, _ = run.communicate(timeout=STOP_TIMEOUT_S)
        exited_after = time.monotonic() - signalled
        assert run.returncode == 128 + signal.SIGTERM, output
        assert "stopped by SIGTERM" in output
        stopped = json.loads((out / "r" / "_work" / "stopped.json").read_text())
        assert stopped["signal"] == "SIGTERM" and stopped["exit_status"] == 143
        assert stopped["step"] == "run_shards" and stopped["steps_finished"][-1] == "plan"
        assert stopped["written"]["iteration_parts"] >= 1
        assert len(stopped["written"]["shard_results"]) < CLIPS // SHARD_SIZE  # stopped mid-run
        assert not (out / "r" / "run.json").exists()
        wait_for_none(started, STOP_TIMEOUT_S)
        print(f"exit {exited_after:.1f} s after SIGTERM")
    finally:
        kill_all(run, started)
    # the same command resumes: the stopped attempt's committed clips are not done again (on the
    # session's shared Prefect server: this run's server start is not what is checked here)
    resumed_at = time.monotonic()
    again = start_run(catalog, out, "local", {**env, **shared_server_env()})
    output, _ = again.communicate(timeout=240)
    print(f"resumed run finished in {time.monotonic() - resumed_at:.1f} s")
    assert again.returncode == 0, output
    record = json.loads((out / "r" / "run.json").read_text())
    assert record["counts"]["ok"] == CLIPS and record["attempt"] == 2
    rounds = record["clip_rounds"]
    assert rounds["resumed"] >= SHARD_SIZE and rounds["resumed"] + rounds["done_now"] == CLIPS
    # the stop marker is moved into the job's history once an attempt resumes
    assert not (out / "r" / "_work" / "stopped.json").exists()
    history = json.loads((out / "r" / "_work" / "job.json").read_text())["stops"]
    assert [s["signal"] for s in history] == ["SIGTERM"]


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_stops_quickly(catalog, env, tmp_path):
    """A terminal's Ctrl-C reaches the whole foreground process group: Prefect's server must not
    die first, or the run waits about a minute on the client's retries before it exits."""
    out = tmp_path / "out"
    run = start_run(catalog, out, "local", env, start_new_session=True)  # its own group
    started: dict[int, tuple[float, str]] = {}
    try:
        wait_for_first_part(run, out)
        started = started_by(run)
        server = [pid for pid, (_, command) in started.items() if "uvicorn" in command]
        assert len(server) == 1 and os.getsid(server[0]) != os.getsid(run.pid)
        os.killpg(run.pid, signal.SIGINT)
        output, _ = run.communicate(timeout=STOP_TIMEOUT_S)
        assert run.returncode == 128 + signal.SIGINT, output
        stopped = json.loads((out / "r" / "_work" / "stopped.json").read_text())
        assert stopped["signal"] == "SIGINT" and stopped["step"] == "run_shards"
        wait_for_none(started, STOP_TIMEOUT_S)
    finally:
        kill_all(run, started)


@pytest.mark.slow
def test_after_sigkill_nothing_it_started_survives(catalog, env, tmp_path):
    out = tmp_path / "out"
    run = start_run(catalog, out, "ray", env)
    started: dict[int, tuple[float, str]] = {}
    try:
        wait_for_first_part(run, out)
        started = started_by(run)
        commands = " ".join(command for _, command in started.values())
        assert "uvicorn" in commands and "raylet" in commands and "gcs_server" in commands
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
        gone_after = wait_for_none(started, 30)
        print(f"{len(started)} processes gone {gone_after:.1f} s after SIGKILL")
    finally:
        kill_all(run, started)
