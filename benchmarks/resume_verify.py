"""What trusting nothing unverified costs: a resume checks every committed part in full and a run
hashes every delivered file before run.json, where a resume used to read only part footers.

Runs a real catalog (signal engine, loudness, local executor, `--clips` clips of `--seconds` s,
`--rounds` rounds) to the end, then times, over the finished run folder: reading every part's
footer (what a resume read before), `integrity.check_part` on every part (what it reads now),
and `integrity.check_deliveries` (the pass before run.json), against the run's own wall time.
Run: `python benchmarks/resume_verify.py --clips 1000`. Writes
benchmarks/results/resume_verify.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.integrity import check_deliveries, check_part
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job

from machine import machine_info, write_result

RESULTS = Path(__file__).parent / "results"


def make_catalog(folder: Path, clips: int, seconds: float) -> str:
    folder.mkdir(parents=True)
    rate = 24000
    t = np.arange(int(seconds * rate)) / rate
    ids, uris = [], []
    for i in range(clips):
        wave = 0.2 * np.sin(2 * np.pi * (120 + i % 50) * t) * (0.6 + 0.4 * np.sin(6 * t))
        path = folder / f"c{i:05d}.flac"
        sf.write(path, wave.astype(np.float32), rate)
        ids.append(f"c{i:05d}")
        uris.append(str(path))
    manifest = folder / "m.parquet"
    pq.write_table(pa.table({"clip_id": ids, "audio_uri": uris}), manifest)
    return str(manifest)


def seconds(call) -> float:
    start = time.perf_counter()
    call()
    return round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_catalog(Path(tmp) / "cat", args.clips, args.seconds)
        job = JobSpec(
            manifest_uri=manifest,
            out=str(Path(tmp) / "runs"),
            run_id="bench",
            edits=list(parse_chain("loudness=-23")),
            iterations=args.rounds,
            executor="local",
            report="none",
        )
        run_s = seconds(lambda: run_job(job, executor=LocalExecutor()))
        store = RunStore(job.out, job.run_id)
        parts = store.list(store.iterations_dir)
        part_bytes = sum(store.fs.size(p) for p in parts)
        footers_s = seconds(lambda: [store.read_metadata(p) for p in parts])
        check_s = seconds(lambda: [check_part(store, p) for p in parts])
        deliveries_s = seconds(lambda: check_deliveries(store))
    result = {
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "rounds": args.rounds,
        "parts": len(parts),
        "part_mb": round(part_bytes / 1e6, 1),
        "run_wall_s": run_s,
        "resume_footers_only_s": footers_s,
        "resume_check_every_part_s": check_s,
        "check_deliveries_s": deliveries_s,
        "verification_share_of_run": round((check_s + deliveries_s) / run_s, 3),
        "note": "local disk; one process; the machine is shared with other jobs (load "
        "average 6-9 on 2 cores while measured), so times are indicative only",
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_result(RESULTS / "resume_verify.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
