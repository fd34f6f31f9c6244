"""Cost of preference pairs: importing a reviewer's ratings file and building
preferences.parquet from a finished run.

Input: --clips rows of a 1 s tone (24 kHz mono) made faster twice on the signal engine
(in-process, local executor, one core), then one ratings file rating every clip's round 2 at 5
and its source at 1 (one pair per clip). Reported: the run's wall time (context only), the
import's (check every entry against the run, seal, write, ledger), and the preferences build's
(pairs from ratings and round hashes, the rounds' audio read through the records index and
written beside the set, batched Parquet writing, the data card). The machine is shared with
other users and loaded: the load average is recorded.

Run: `python benchmarks/preferences.py` -> benchmarks/results/preferences.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from stepedit_core.dataset.preferences import build_preferences  # noqa: E402
from stepedit_core.dataset.ratings import import_ratings  # noqa: E402
from stepedit_core.executors.local import LocalExecutor  # noqa: E402
from stepedit_core.foundation.edits import parse_edit  # noqa: E402
from stepedit_core.lifecycle.job import JobSpec  # noqa: E402
from stepedit_core.lifecycle.run import run_job  # noqa: E402

from machine import machine_info, one_core, write_result  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "preferences.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=500)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    one_core()
    base = Path(tempfile.mkdtemp(prefix="prefs-bench-"))
    t = np.arange(24000) / 24000
    sf.write(base / "tone.wav", (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 24000)
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"clip_id": [f"c{i:06d}" for i in range(args.clips)],
            "audio_uri": [str(base / "tone.wav")] * args.clips}  # fmt: skip
    pq.write_table(pa.table(rows), base / "m.parquet")
    job = JobSpec(manifest_uri=str(base / "m.parquet"), out=str(base / "runs"), run_id="r",
                  edits=(parse_edit("speed=faster"),), iterations=2, executor="local",
                  report="none")  # fmt: skip
    started = time.perf_counter()
    run_job(job, executor=LocalExecutor())
    run_s = time.perf_counter() - started
    ratings = [{"run_id": "r", "clip_id": c, "iteration": k, "rating": v, "rater": "bench"}
               for c in rows["clip_id"] for k, v in ((2, 5), (0, 1))]  # fmt: skip
    data = json.dumps({"ratings": ratings}).encode()
    started = time.perf_counter()
    outcome = import_ratings(str(base / "runs"), "r", data, "bench.json")
    import_s = time.perf_counter() - started
    assert outcome.imported == 2 * args.clips and not outcome.rejected
    started = time.perf_counter()
    summary = build_preferences(str(base / "runs"), "r", str(base / "prefs"))
    build_s = time.perf_counter() - started
    assert summary["pairs"] == args.clips
    result = {
        "benchmark": "preferences",
        "clips": args.clips,
        "ratings": outcome.imported,
        "pairs": summary["pairs"],
        "run_s": round(run_s, 3),
        "import_ratings_s": round(import_s, 3),
        "build_preferences_s": round(build_s, 3),
        "build_ms_per_pair": round(1000 * build_s / args.clips, 3),
        "note": "one core of a shared, loaded 2-core machine (other engineers' work running): "
        "the numbers are a floor; audio is local disk",
        "load_average": os.getloadavg(),
        "machine": machine_info(),
    }
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
