"""Catalog scale, end to end: `stepedit run` (local executor, signal engine) as a subprocess on
a synthetic catalog of short clips, on local disk or on a moto S3 server (its own process).

Per case it records the driver's peak RSS (VmHWM of the `stepedit run` process, sampled until
it exits), wall time, the objects the run wrote per 1,000 clip-rounds, and, with `--resume`,
the cost of resuming: the run is killed by the `shard.part_committed:N` failpoint once about
90% of its parts are committed, and the same command is timed again.

Rows not to be edited are refused at plan time (no `audio_uri`), so a large catalog can be
planned and merged in full while only `--edited` rows are edited; every edited row points at
one of a few short clips (distinct clip ids: each is its own clip-round).

Run: `python benchmarks/scale.py --rows 10000 --edited 10000 --storage local`.
Writes benchmarks/results/scale-<storage>-<rows>-<edited>[-resume].json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from machine import machine_info, write_result

RESULTS = Path(__file__).parent / "results"
EDIT = "loudness=-23"
DISTINCT_CLIPS = 16
RECORDS_PER_PART = 256  # stepedit_core.lifecycle.shard.RECORDS_PER_PART
CLI = "import sys; from stepedit_flows.cli import main; sys.exit(main())"
ENV = {
    "RAY_ACCEPT_ONNX_IN_WORKERS": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "RAY_AUTH_MODE": "disabled",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def clip_bytes(seconds: float, f0: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.2 * np.sin(2 * np.pi * f0 * t) + np.random.default_rng(int(f0)).normal(0, 0.01, t.size)
    buffer = io.BytesIO()
    sf.write(buffer, wave.astype(np.float32), rate, format="FLAC")
    return buffer.getvalue()


def write_catalog(fs, base: str, rows: int, edited: int, seconds: float, scheme: str) -> str:
    """A manifest of `rows` rows, the first `edited` of them with audio (spread over the rows
    would change nothing measured: planning reads every row either way)."""
    uris = []
    for i in range(DISTINCT_CLIPS):
        path = f"{base}/clips/clip-{i:02d}.flac"
        fs.pipe(path, clip_bytes(seconds, 110.0 + 7 * i))
        uris.append(f"{scheme}{path}")
    audio = [uris[i % DISTINCT_CLIPS] if i < edited else None for i in range(rows)]
    table = pa.table(
        {
            "clip_id": [f"clip-{i:06d}" for i in range(rows)],
            "audio_uri": pa.array(audio, pa.string()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    manifest = f"{base}/catalog.parquet"
    fs.pipe(manifest, sink.getvalue())
    return f"{scheme}{manifest}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    """A moto S3 server in its own process, so its CPU and memory are not the driver's."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from moto.server import ThreadedMotoServer; "
         f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}).start(); time.sleep(10**7)"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the moto server did not start")


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_cli(args: list[str], env: dict[str, str]) -> dict:
    """Run `stepedit` to its end; wall time, exit code and the driver's peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    peak = 0.0
    while proc.poll() is None:
        rss = peak_rss_mb(proc.pid)
        peak = max(peak, rss or 0.0)
        time.sleep(0.25)
    seconds = time.perf_counter() - started
    # a killed run leaves Prefect's temporary server behind, holding the pipes open
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    return {
        "code": proc.returncode,
        "seconds": round(seconds, 2),
        "peak_driver_rss_mb": round(peak, 1),
        "stderr_tail": err[-800:] if proc.returncode not in (0, -9) else "",
        "stdout_tail": out[-400:],
    }


def count_objects(fs, root: str) -> dict[str, int]:
    fs.invalidate_cache()
    counts: dict[str, int] = {}
    for path in fs.find(root):
        top = path[len(root) :].strip("/").split("/", 1)[0]
        counts[top] = counts.get(top, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--edited", type=int, default=None, help="rows edited (default: all)")
    parser.add_argument("--seconds", type=float, default=0.5, help="clip length (BS.1770: > 0.4 s)")
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--storage", choices=("local", "s3"), default="local")
    parser.add_argument("--resume", action="store_true", help="kill at ~90%% of parts, rerun")
    args = parser.parse_args()
    edited = args.rows if args.edited is None else args.edited
    env = {**os.environ, **ENV}
    env.pop("STEPEDIT_FAILPOINT", None)
    moto = None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        if args.storage == "s3":
            moto, endpoint = start_moto()
            env.update(
                AWS_ACCESS_KEY_ID="test",
                AWS_SECRET_ACCESS_KEY="test",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_ENDPOINT_URL=endpoint,
            )
            fs = fsspec.filesystem("s3", endpoint_url=endpoint, key="test", secret="test")
            fs.mkdir("catalog")
            fs.mkdir("runs")
            base, out, run_root = "catalog/scale", "s3://runs/scale", "runs/scale/bench"
        else:
            fs = fsspec.filesystem("file")
            base, out = f"{tmp}/catalog", f"{tmp}/runs"
            fs.makedirs(f"{base}/clips", exist_ok=True)
            run_root = f"{out}/bench"
        try:
            scheme = "s3://" if args.storage == "s3" else ""
            manifest = write_catalog(fs, base, args.rows, edited, args.seconds, scheme)
            command = [
                "run", manifest, "--out", out, "--run-id", "bench", "--edit", EDIT,
                "--executor", "local", "--shard-size", str(args.shard_size), "--quiet",
            ]  # fmt: skip
            result: dict = {
                "benchmark": "scale",
                "storage": args.storage,
                "rows": args.rows,
                "edited_rows": edited,
                "refused_at_plan": args.rows - edited,
                "clip_seconds": args.seconds,
                "edit": EDIT,
                "executor": "local",
                "shard_size": args.shard_size,
            }
            if args.resume:
                parts = sum(
                    math.ceil(min(args.shard_size, edited - s) / RECORDS_PER_PART)
                    for s in range(0, edited, args.shard_size)
                )
                nth = max(1, int(parts * 0.9))
                killed = run_cli(
                    command, {**env, "STEPEDIT_FAILPOINT": f"shard.part_committed:{nth}"}
                )
                result["killed_run"] = {
                    **killed,
                    "failpoint": f"shard.part_committed:{nth}",
                    "parts": parts,
                }
            run = run_cli(command, env)
            result["run"] = run
            if run["code"] != 0:
                raise SystemExit(f"stepedit run failed ({run['code']}): {run['stderr_tail']}")
            record = json.loads(fs.cat_file(f"{run_root}/run.json"))
            result["run_record"] = {
                "counts": record["counts"],
                "clip_rounds": record["clip_rounds"],
                "attempt": record["attempt"],
                "seconds": record["seconds"],
                "shard_seconds_max": max((s["seconds"] for s in record["shards"]), default=0.0),
            }
            objects = count_objects(fs, run_root)
            clip_rounds = record["clip_rounds"]["total"]
            result["objects"] = objects
            result["objects_per_1000_clip_rounds"] = round(
                sum(objects.values()) * 1000 / max(clip_rounds, 1), 1
            )
            result["objects_per_1000_clip_rounds_without_audio"] = round(
                (sum(objects.values()) - objects.get("audio", 0)) * 1000 / max(clip_rounds, 1), 1
            )
        finally:
            if moto is not None:
                moto.kill()
                moto.wait()
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    result["machine"] = machine_info()
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"scale-{args.storage}-{args.rows}-{edited}{'-resume' if args.resume else ''}.json"
    write_result(RESULTS / name, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
