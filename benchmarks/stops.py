"""How fast a stopped `stepedit run` is gone, and how long what it started outlives it.

For each executor and each way of stopping (SIGTERM to the process, Ctrl-C to its process group
as a terminal sends it, SIGKILL), starts a real run on generated clips, waits until the first
part is committed, stops it, and measures the seconds until the run exits and until none of the
processes it had started (Prefect's temporary server, a local Ray) is left.

    python benchmarks/stops.py [--clips 150] [--executors local,ray]

Writes benchmarks/results/stops.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from machine import machine_info, write_result

RESULTS = Path(__file__).parent / "results"
STOPS = {
    "sigterm": lambda pid: os.kill(pid, signal.SIGTERM),
    "ctrl_c_group": lambda pid: os.killpg(pid, signal.SIGINT),
    "sigkill": lambda pid: os.kill(pid, signal.SIGKILL),
}


def write_catalog(folder: Path, clips: int) -> Path:
    rate = 16000
    rows = []
    for i in range(clips):
        t = np.arange(rate // 2) / rate
        noise = np.random.default_rng(i).normal(0, 0.01, t.shape)
        sf.write(folder / f"c{i:04d}.wav", (0.3 * np.sin(2 * np.pi * 180 * t) + noise), rate)
        rows.append((f"c{i:04d}", str(folder / f"c{i:04d}.wav")))
    table = pa.table({"clip_id": [r[0] for r in rows], "audio_uri": [r[1] for r in rows]})
    pq.write_table(table, folder / "catalog.parquet")
    return folder / "catalog.parquet"


def alive(started: dict[int, float]) -> list[int]:
    left = []
    for pid, created in started.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 0.01 and proc.status() != "zombie":
                left.append(pid)
        except psutil.Error:
            continue
    return left


def one(catalog: Path, out: Path, executor: str, stop: str, env: dict) -> dict:
    args = [sys.executable, "-m", "stepedit_flows.cli", "run", str(catalog), "--out", str(out)]
    args += ["--run-id", "r", "--edit", "denoise", "--shard-size", "50", "--executor", executor]
    run = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    begin = time.monotonic()
    while not list((out / "r" / "iterations").glob("shard-*-part-*.parquet")):
        if run.poll() is not None or time.monotonic() - begin > 180:
            run.kill()
            return {"executor": executor, "stop": stop, "error": "no part committed in time"}
        time.sleep(0.1)
    first_part_s = time.monotonic() - begin
    started = {}
    for proc in psutil.Process(run.pid).children(recursive=True):
        try:
            started[proc.pid] = proc.create_time()
        except psutil.Error:
            continue
    stopped_at = time.monotonic()
    STOPS[stop](run.pid)
    code = run.wait(timeout=180)
    exit_s = time.monotonic() - stopped_at
    while alive(started) and time.monotonic() - stopped_at < 120:
        time.sleep(0.1)
    left = alive(started)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return {
        "executor": executor,
        "stop": stop,
        "first_part_s": round(first_part_s, 2),
        "exit_status": code if code >= 0 else 128 - code,
        "exit_s": round(exit_s, 2),
        "processes_started": len(started),
        "all_gone_s": None if left else round(time.monotonic() - stopped_at, 2),
        "left_after_120_s": len(left),
        "stopped_json": (out / "r" / "_work" / "stopped.json").exists(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=150)
    parser.add_argument("--executors", default="local,ray")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        catalog = write_catalog(folder, args.clips)
        env = {
            **os.environ,
            "RAY_ACCEPT_ONNX_IN_WORKERS": "1",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "RAY_AUTH_MODE": "disabled",
            "PREFECT_HOME": str(folder / "prefect"),
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        }
        runs = []
        for executor in args.executors.split(","):
            for number, stop in enumerate(STOPS):
                out = folder / f"out-{executor}-{number}"
                runs.append(one(catalog, out, executor, stop, env))
                print(json.dumps(runs[-1]), flush=True)
    result = {
        "benchmark": "stops",
        "clips": args.clips,
        "edit": "denoise",
        "runs": runs,
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_result(RESULTS / "stops.json", result)


if __name__ == "__main__":
    main()
