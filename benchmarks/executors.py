"""In-process vs Ray Data executor on the same shard of short clips (signal engine).

Measures throughput (clips/s) and fixed start-up cost (call to first finished clip, Ray start
included for the Ray executor). Steady-state throughput is taken between the moments 10% and
90% of the clips were done, so neither start-up nor the last stragglers count; the goal on N
cores is Ray at >= 0.85 x N x the in-process (one core) steady rate. The load average before and
after each run is recorded: on a shared machine other work takes cores away.
Run: `python benchmarks/executors.py --clips 2000 --edit denoise`.
Writes benchmarks/results/executors-<edit>.json (e.g. executors-loudness-23.json).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from stepedit_core.executors.local import LocalExecutor
from stepedit_core.executors.ray_data import RayDataExecutor
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import RunSteps

from machine import machine_info, write_result

RESULTS = Path(__file__).parent / "results"


def make_catalog(folder: Path, clips: int, seconds: float, rate: int = 16000) -> str:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    uris = []
    for i in range(clips):
        f0 = 100 + (i % 50) * 3
        wave = 0.2 * np.sin(2 * np.pi * f0 * t) + rng.normal(0, 0.01, t.shape)
        path = folder / f"clip-{i:05d}.wav"
        sf.write(path, wave.astype(np.float32), rate)
        uris.append(str(path))
    manifest = folder / "catalog.parquet"
    pq.write_table(
        pa.table({"clip_id": [f"c{i}" for i in range(clips)], "audio_uri": uris}), manifest
    )
    return str(manifest)


def measure(executor_name: str, manifest: str, out: str, edit: str) -> dict:
    job = JobSpec(
        manifest_uri=manifest,
        out=out,
        run_id=f"bench-{executor_name}",
        edits=[edit],
        executor=executor_name,
        shard_size=1_000_000,
    )
    executor = LocalExecutor() if executor_name == "local" else RayDataExecutor()
    done_at: list[float] = []
    steps = RunSteps(
        job, executor, progress=lambda done, total, failed: done_at.append(time.perf_counter())
    )
    sharding = steps.plan()
    load_before = os.getloadavg()
    started = time.perf_counter()
    summary = steps.run_shards(sharding.shards).summaries[0]
    total = time.perf_counter() - started
    return {
        "executor": executor_name,
        "clips": summary.items,
        "ok": summary.ok,
        "seconds": round(total, 3),
        "clips_per_s": round(summary.items / total, 2),
        "first_clip_done_s": round(summary.first_done_s or 0.0, 3),
        # after the first clip: throughput once start-up (Ray start, actor start) is paid
        "after_first_clips_per_s": round(
            (summary.items - 1) / max(total - (summary.first_done_s or 0.0), 1e-9), 2
        ),
        "steady_clips_per_s": steady_rate(done_at),
        "setups": dict(getattr(executor, "setups", {})),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def steady_rate(done_at: list[float], low: float = 0.1, high: float = 0.9) -> float:
    """Clips per second between the moments `low` and `high` of the clips were done."""
    if len(done_at) < 10:
        return 0.0
    first, last = int(len(done_at) * low), int(len(done_at) * high) - 1
    return round((last - first) / max(done_at[last] - done_at[first], 1e-9), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each clip")
    parser.add_argument("--edit", default="loudness=-23")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = make_catalog(folder, args.clips, args.seconds)
        runs = [
            measure(name, manifest, str(folder / "runs"), args.edit) for name in ("local", "ray")
        ]
    local, ray = runs
    result = {
        "benchmark": "executors",
        "edit": args.edit,
        "clip_seconds": args.seconds,
        "runs": runs,
        "cpus": os.cpu_count(),
        "ray_over_local_throughput": round(ray["clips_per_s"] / local["clips_per_s"], 3),
        "ray_over_local_steady": round(ray["steady_clips_per_s"] / local["steady_clips_per_s"], 3),
        "steady_goal": round(0.85 * (os.cpu_count() or 1), 2),
        "machine": machine_info(),
    }
    slug = "".join(c if c.isalnum() else "-" for c in args.edit).strip("-")
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_result(RESULTS / f"executors-{slug}.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
