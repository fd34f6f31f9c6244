"""Progress: the run-wide counts, the terminal bar, plain lines off a terminal, and --quiet."""

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stepedit_core.executors.local import LocalExecutor
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.progress import reporting, run_progress
from stepedit_core.lifecycle.run import run_job
from stepedit_flows.progress import (
    PeriodicLines,
    Silent,
    TerminalBar,
    duration,
    make_renderer,
)

from conftest import shared_server_env, write_clip, write_manifest


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []

    def update(self, done: int, total: int, failed: int) -> None:
        self.seen.append((done, total, failed))


def test_reporting_installs_a_sink_for_the_block_only():
    sink = Recorder()
    with reporting(sink):
        run_progress().update(1, 3, 0)
        run_progress().update(3, 3, 1)
    run_progress().update(1, 3, 0)  # after the block: nobody is watching
    assert sink.seen == [(1, 3, 0), (3, 3, 1)]


def test_a_run_reports_to_the_installed_sink(tmp_path):
    clips = [write_clip(tmp_path / f"{i}.wav", 0.6) for i in range(3)]
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"clip_id": str(i), "audio_uri": c} for i, c in enumerate(clips)]
    )
    job = JobSpec(manifest_uri=manifest, out=str(tmp_path / "o"), run_id="p", edits=["denoise"])
    sink = Recorder()
    with reporting(sink):
        run_job(job, executor=LocalExecutor())
    assert sink.seen[-1] == (3, 3, 0)
    assert [done for done, _, _ in sink.seen] == sorted(done for done, _, _ in sink.seen)


def test_make_renderer_follows_the_stream():
    assert isinstance(make_renderer(quiet=True, stream=TtyStream()), Silent)
    assert isinstance(make_renderer(stream=TtyStream()), TerminalBar)
    assert isinstance(make_renderer(stream=io.StringIO()), PeriodicLines)


def test_terminal_bar_redraws_in_place_with_rate_eta_and_failures():
    clock, stream = FakeClock(), TtyStream()
    bar = TerminalBar(stream, clock, width=90)
    bar.update(0, 10, 0)
    clock.now += 2.0
    bar.update(4, 10, 1)  # 2 clips/s, 6 left: 3 s
    frames = stream.getvalue().split("\r\x1b[K")[1:]
    assert len(frames) == 2 and "\n" not in stream.getvalue()
    assert frames[1].startswith(" 40% |")
    assert "4/10 clips" in frames[1] and "2.0 clips/s" in frames[1]
    assert "ETA 0:03" in frames[1] and "1 failed" in frames[1]
    assert all(len(f) <= 89 for f in frames)
    filled, empty = frames[1].count("#"), frames[1].count(".")
    assert filled / (filled + empty) == pytest.approx(0.4, abs=0.05)


def test_terminal_bar_throttles_but_always_shows_the_end():
    clock, stream = FakeClock(), TtyStream()
    bar = TerminalBar(stream, clock, width=80)
    bar.update(0, 1000, 0)
    for done in range(1, 1000):
        clock.now += 0.001  # 1,000 clips a second: far more often than a redraw
        bar.update(done, 1000, 0)
    draws_before_end = stream.getvalue().count("\r")
    assert draws_before_end < 20
    clock.now += 0.001
    bar.update(1000, 1000, 7)
    bar.close()
    text = stream.getvalue()
    assert "1000/1000 clips" in text.split("\r\x1b[K")[-1] and "7 failed" in text
    assert text.endswith("\n")


def test_terminal_bar_close_shows_a_throttled_last_state():
    clock, stream = FakeClock(), TtyStream()
    bar = TerminalBar(stream, clock, width=80)
    bar.update(0, 10, 0)
    clock.now += 0.01
    bar.update(5, 10, 2)  # too soon after the first draw: held back
    assert "5/10" not in stream.getvalue()
    bar.close()
    assert "5/10 clips" in stream.getvalue() and "2 failed" in stream.getvalue()


def test_plain_lines_are_periodic_and_end_with_the_total():
    clock, stream = FakeClock(), io.StringIO()
    lines = PeriodicLines(stream, clock, every_s=10)
    lines.update(0, 100, 0)
    for done in range(1, 100):
        clock.now += 0.5  # 2 clips/s for 50 s: a line every 10 s
        lines.update(done, 100, done // 50)
    clock.now += 0.5
    lines.update(100, 100, 2)
    lines.update(100, 100, 2)  # the end is reported once
    out = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert 5 <= len(out) <= 7
    assert out[-1] == "progress: 100/100 clips (100%), 2.0 clips/s, ETA 0:00, 2 failed"
    assert "ETA 0:40" in out[1] or "ETA 0:39" in out[1]  # 20 done at 2/s, 80 left


def test_silent_writes_nothing():
    stream = TtyStream()
    quiet = make_renderer(quiet=True, stream=stream)
    quiet.update(1, 2, 0)
    quiet.close()
    assert stream.getvalue() == ""


def test_durations_read_like_a_clock():
    assert duration(0) == "0:00" and duration(65) == "1:05" and duration(3723) == "1:02:03"


# --- the command, end to end ----------------------------------------------------------------


def _catalog(tmp_path, clips: int = 3) -> str:
    folder = tmp_path / "catalog"
    folder.mkdir()
    rows = [
        {"clip_id": f"c{i}", "audio_uri": write_clip(folder / f"c{i}.wav", 0.6, f0=180 + 20 * i)}
        for i in range(clips)
    ]
    return write_manifest(folder / "m.parquet", rows)


def _cli(tmp_path, manifest: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "stepedit_flows.cli",
        "run",
        manifest,
        "--out",
        str(tmp_path / "out"),
        "--run-id",
        "p",
        "--edit",
        "speed=1.25",
        "--executor",
        "local",
        *extra,
    ]


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    """One Prefect home for this module's runs on a temporary server: its database is built
    once, not once a test."""
    return tmp_path_factory.mktemp("prefect-home")


def _env(prefect_home: Path) -> dict[str, str]:
    """A user's environment: none of the test session's Prefect settings; each run starts its
    own temporary server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    # a fresh Prefect home builds its database while the temporary server starts: on a loaded
    # 2-core machine that can take longer than Prefect's default wait
    slow_start = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
    return dict(env, PREFECT_HOME=str(prefect_home), COLUMNS="100", **slow_start)


def _env_on_shared_server() -> dict[str, str]:
    """A user's environment whose runs use a local server that outlives them (the session's
    shared one), as a user's runs do by default: for a run whose server's start and its log
    lines are not what is checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return dict(env, COLUMNS="100", **shared_server_env())


def _run_in_pty(command: list[str], env: dict[str, str], timeout: float = 240) -> str:
    """Run with stdout and stderr on a pseudo-terminal, as a user at a terminal would."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the command exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_a_terminal_gets_a_live_bar_and_no_info_lines(tmp_path, prefect_home):
    text = _run_in_pty(_cli(tmp_path, _catalog(tmp_path)), _env(prefect_home))
    frames = text.split("\r\x1b[K")
    assert len(frames) >= 2, text
    assert re.search(r"100% \|#+\| 3/3 clips .* 0 failed", text), text
    assert "run p: 3 rows, 3 ok, 0 failed" in text
    assert "INFO" not in text  # Prefect's console shows warnings only while the bar runs


@pytest.mark.slow
def test_quiet_shows_no_progress_and_no_logs(tmp_path, prefect_home):
    result = subprocess.run(
        _cli(tmp_path, _catalog(tmp_path), "--quiet"),
        capture_output=True,
        text=True,
        env=_env(prefect_home),
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("run p: 3 rows, 3 ok, 0 failed")


@pytest.mark.slow
def test_off_a_terminal_a_run_shows_progress_and_summary_and_v_shows_the_logs(
    tmp_path, prefect_home
):
    manifest = _catalog(tmp_path)
    default = subprocess.run(
        _cli(tmp_path, manifest),
        capture_output=True,
        text=True,
        env=_env(prefect_home),
        timeout=240,
    )
    assert default.returncode == 0, default.stderr
    # stepedit's own lines only: Prefect's go to the run's log file (and Prefect's API)
    assert all(line.startswith("progress: ") for line in default.stderr.splitlines())
    assert default.stdout.startswith("run p: 3 rows, 3 ok, 0 failed")
    log = default.stdout.splitlines()[-1].removeprefix("log: ")
    assert Path(log).parent == tmp_path / "out" / "p" / "_work" / "logs"
    logged = Path(log).read_text()
    assert "Starting temporary server" in logged and "Beginning flow run 'p'" in logged
    assert "Task run 'plan-shards-" in logged and "| INFO    |" in logged
    verbose = subprocess.run(
        _cli(tmp_path, manifest, "-v", "--overwrite"),
        capture_output=True,
        text=True,
        env=_env_on_shared_server(),  # the temporary server's lines are checked above
        timeout=240,
    )
    assert verbose.returncode == 0, verbose.stderr
    assert "Beginning flow run 'p'" in verbose.stderr and "Task run 'plan-shards-" in verbose.stderr
    assert "progress: 3/3 clips (100%)" in verbose.stderr
    # --overwrite starts the run afresh but keeps the earlier attempts' logs
    assert len(list(Path(log).parent.glob("*.log"))) == 2
