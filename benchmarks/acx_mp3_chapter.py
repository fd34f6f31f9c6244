"""A whole ACX chapter run: `loudness=acx`, `--qc acx`, `--deliver-format mp3`, in process.

Input: the synthetic chapter of benchmarks/mastering.py (dynamic narration, 26-29 dB crest
factor, 8 dB drift, -50 dB room tone, 44.1 kHz mono), --minutes long, as a FLAC in a one-row
manifest. The run is the product's own (`run_job`, local executor, one process, torch on one
thread); measured: wall time, x real time, the process's peak resident memory, and what the
delivered MP3 measures when decoded (RMS, sample and true peak, floor, head and tail, bitrate),
with the ACX verdict and `stepedit verify`'s.

Run: `python benchmarks/acx_mp3_chapter.py [--minutes 30]`
-> benchmarks/results/acx_mp3_chapter.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must be set before numpy loads
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from mastering import RATE, chapter  # noqa: E402

from stepedit_core.audit import verify_run  # noqa: E402
from stepedit_core.executors.local import LocalExecutor  # noqa: E402
from stepedit_core.foundation.audio import load  # noqa: E402
from stepedit_core.lifecycle.job import JobSpec  # noqa: E402
from stepedit_core.lifecycle.run import run_job  # noqa: E402
from stepedit_core.quality import qc  # noqa: E402
from stepedit_core.quality.delivery import check  # noqa: E402
from stepedit_core.quality.encoding import mp3_bitrates  # noqa: E402

from machine import machine_info, one_core, write_result  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "acx_mp3_chapter.json"
KEPT = ("rms_dbfs", "peak_dbfs", "true_peak_dbtp", "noise_floor_db", "head_silence_s",
        "tail_silence_s", "duration_s", "speech_ratio")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    one_core()
    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sf.write(folder / "chapter.flac", chapter(args.minutes), RATE, subtype="PCM_24")
        manifest = folder / "book.parquet"
        row = {"clip_id": ["chapter"], "audio_uri": [str(folder / "chapter.flac")]}
        pq.write_table(pa.table(row), manifest)
        job = JobSpec(
            manifest_uri=str(manifest),
            out=str(folder / "runs"),
            run_id="book",
            edits=["loudness=acx"],
            executor="local",
            qc="acx",
            deliver_format="mp3",
            report="none",
        )
        start = time.perf_counter()
        run_job(job, executor=LocalExecutor())
        wall = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (result,) = pq.read_table(folder / "runs" / "book" / "manifest.parquet").to_pylist()
        data = Path(result["output_uri"]).read_bytes()
        delivered, _ = load(result["output_uri"])
        metrics = qc.measure(delivered).metrics
        verdict = check(metrics, "acx")
        verified = verify_run(str(folder / "runs"), "book")
    out = {
        "benchmark": "acx_mp3_chapter",
        "note": "one process, one core (pinned), local executor, on a shared 2-core machine "
        "under load from other jobs (load averages below): times are upper bounds",
        "load_average_1_5_15": {"start": load_start, "end": list(os.getloadavg())},
        "minutes": args.minutes,
        "wall_s": round(wall, 1),
        "x_real_time": round(args.minutes * 60 / wall, 2),
        "peak_rss_mb": round(peak_mb, 1),
        "row": {k: result[k] for k in ("status", "qc_status", "qc_reasons")},
        "delivered_mp3": {
            "kbps": sorted(mp3_bitrates(data)),
            "sample_rate": delivered.sample_rate,
            "channels": delivered.channels,
            **{k: metrics.get(k) for k in KEPT},
            "acx_pass": verdict.passed,
            "acx_reasons": verdict.reasons,
        },
        "verify_intact": verified.intact,
        "machine": machine_info(),
    }
    write_result(args.out, out)
    print(json.dumps({k: out[k] for k in ("wall_s", "x_real_time", "peak_rss_mb", "row")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
