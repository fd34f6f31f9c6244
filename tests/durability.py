"""Helpers for the durability tests: a small catalog, `stepedit run` as a real subprocess, and
one check of everything a finished run must hold (each row once, each clip-round once, every
delivered file the bytes its record names)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq

from conftest import put_clip, shared_server_env, write_clip, write_manifest

REPO = Path(__file__).resolve().parents[1]
# the quiet, offline settings every subprocess run needs (see conftest.py)
BASE_ENV = {
    "RAY_ACCEPT_ONNX_IN_WORKERS": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "RAY_AUTH_MODE": "disabled",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # the temporary server's start waits out a loaded 2-core machine (Prefect's default: 20 s)
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
CLI = "import sys; from stepedit_flows.cli import main; sys.exit(main())"


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "STEPEDIT_FAILPOINT"}
    env.update(BASE_ENV)
    env.update(shared_server_env())
    env.update(extra or {})
    return env


def local_catalog(folder: Path, clips: int, seconds: float = 0.5) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "clip_id": f"c{i:04d}",
            "audio_uri": write_clip(folder / f"c{i:04d}.wav", seconds, f0=120.0 + i % 40),
        }
        for i in range(clips)
    ]
    return write_manifest(folder / "catalog.parquet", rows)


def s3_catalog(fs: Any, prefix: str, clips: int, seconds: float = 0.5) -> str:
    rows = [
        {"clip_id": f"c{i:04d}", "audio_uri": put_clip(fs, f"{prefix}/c{i:04d}.flac", seconds)}
        for i in range(clips)
    ]
    local = io.BytesIO()
    write_manifest(local, rows)  # type: ignore[arg-type]
    fs.pipe(f"{prefix}/catalog.parquet", local.getvalue())
    return f"s3://{prefix}/catalog.parquet"


def run_args(manifest: str, out: str, run_id: str, *extra: str) -> list[str]:
    return [
        "run", manifest, "--out", out, "--run-id", run_id, "--edit", "loudness=-23",
        "--executor", "local", "--quiet", *extra,
    ]  # fmt: skip


def start(args: list[str], env: dict[str, str], logs: Path | None = None) -> subprocess.Popen:
    """`stepedit ARGS` in its own session. Output goes to files, not pipes: a process the run
    started (Prefect's temporary server) may keep a pipe open after the run itself was killed."""
    logs = Path(tempfile.mkdtemp(prefix="stepedit-cli-")) if logs is None else logs
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        cwd=REPO,
        env=env,
        stdout=open(logs / "stdout", "w"),  # noqa: SIM115 - closed by the child's exit
        stderr=open(logs / "stderr", "w"),  # noqa: SIM115
        text=True,
        start_new_session=True,  # a kill of the group reaches what the run started
    )
    proc.logs = logs  # type: ignore[attr-defined]
    return proc


@dataclass
class Finished:
    code: int
    out: str
    err: str
    seconds: float


def output(proc: subprocess.Popen) -> tuple[str, str]:
    logs: Path = proc.logs  # type: ignore[attr-defined]
    return (logs / "stdout").read_text(), (logs / "stderr").read_text()


def reap(proc: subprocess.Popen) -> None:
    """SIGKILL whatever the run started and left behind (its session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def stepedit(args: list[str], env: dict[str, str], timeout: float = 300) -> Finished:
    started = time.monotonic()
    proc = start(args, env)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        reap(proc)
        proc.wait()
        out, err = output(proc)
        raise AssertionError(f"stepedit {args[:1]} ran past {timeout} s:\n{out}\n{err}") from None
    finally:
        reap(proc)
    out, err = output(proc)
    return Finished(proc.returncode, out, err, time.monotonic() - started)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the run and whatever it started, then wait for it."""
    reap(proc)
    proc.wait(timeout=30)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_parquet(fs: Any, path: str, columns: list[str] | None = None):
    return pq.read_table(io.BytesIO(fs.cat_file(path)), columns=columns)


def check_finished_run(out: str, run_id: str, rows: int, rounds: int) -> dict:
    """Everything a finished run must hold after any number of crashes; returns run.json."""
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{run_id}")
    fs.invalidate_cache()
    manifest = _read_parquet(fs, f"{root}/manifest.parquet").to_pylist()
    clip_ids = [r["clip_id"] for r in manifest]
    assert len(manifest) == rows and len(set(clip_ids)) == rows, "each input row exactly once"
    parts = [p for p in fs.ls(f"{root}/iterations", detail=False) if p.endswith(".parquet")]
    records = [
        rec
        for part in parts
        for rec in _read_parquet(
            fs, part, ["clip_id", "iteration", "status", "output_sha256"]
        ).to_pylist()
    ]
    per_round = Counter((r["clip_id"], r["iteration"]) for r in records)
    doubled = {k: n for k, n in per_round.items() if n != 1}
    assert not doubled, f"clip-rounds recorded more than once: {list(doubled.items())[:5]}"
    assert len(per_round) == rows * rounds, (len(per_round), rows * rounds)
    by_clip: dict[str, dict[int, str]] = {}
    for rec in records:
        by_clip.setdefault(rec["clip_id"], {})[rec["iteration"]] = rec["output_sha256"]
    ok = [r for r in manifest if r["status"] == "ok"]
    assert len(ok) == rows, [r for r in manifest if r["status"] != "ok"][:3]
    for row in ok:
        rounds_of = by_clip[row["clip_id"]]
        delivered = row.get("selected_round") or max(rounds_of)
        path = fsspec.core.url_to_fs(row["output_uri"])[1]
        assert sha256(fs.cat_file(path)) == rounds_of[delivered], row["clip_id"]
    record = json.loads(fs.cat_file(f"{root}/run.json"))
    rounds_count = record["clip_rounds"]
    assert rounds_count["resumed"] + rounds_count["done_now"] == rounds_count["total"]
    assert rounds_count["total"] == rows * rounds
    return record
