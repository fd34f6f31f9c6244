"""`stepedit report` cost per clip: a real signal-engine run of short clips, then the review
page with and without media (per-round FLAC files and spectrograms).
Run: `python benchmarks/report_build.py --clips 60 --rounds 2`.
Writes benchmarks/results/report_build.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from stepedit_core.executors.local import LocalExecutor
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job
from stepedit_core.report import build_report

from executors import make_catalog
from machine import machine_info, write_result

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        job = JobSpec(
            manifest_uri=make_catalog(folder, args.clips, args.seconds, rate=24000),
            out=str(folder / "runs"),
            run_id="bench",
            edits=["loudness=-23"],
            iterations=args.rounds,
            executor="local",
        )
        run_job(job, executor=LocalExecutor())
        timings = {}
        for media in ("none", "all"):
            t0 = time.perf_counter()
            build_report(job.out, job.run_id, page_size=50, media=media)
            timings[f"media_{media}"] = time.perf_counter() - t0
        report = folder / "runs" / "bench" / "report"
        media_bytes = sum(p.stat().st_size for p in report.rglob("*") if p.is_file())
    per_clip = {k: round(v / args.clips, 4) for k, v in timings.items()}
    result = {
        "benchmark": "report_build",
        "clips": args.clips,
        "rounds": args.rounds,
        "clip_seconds": args.seconds,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "seconds_per_clip": per_clip,
        "report_bytes_per_clip": media_bytes // args.clips,
        "estimate_100k_clips_hours_one_core": round(per_clip["media_all"] * 100_000 / 3600, 2),
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_result(RESULTS / "report_build.json", result)
    json.dump({k: v for k, v in result.items() if k != "machine"}, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
