"""Cost of a margin set on the signal engine: the run that makes the versions, and the
scoring that pairs them, per attribute.

Input: the 8 demo clips (3-5 s, 24 kHz mono) repeated under distinct clip ids to --clips rows,
x the attributes speed=faster, denoise, loudness=-16, vad, edited in-process (local executor,
one core, one torch thread). Reported: the run's wall time, the set's wall time (pairing,
reading both versions, scoring, writing sft.parquet; a second call on the finished run, which
does no editing), and the median scorer time per pair for each attribute (audio already
decoded), and denoise with --dnsmos. The machine is shared with other users and loaded: the
load average is recorded.

Run: `python benchmarks/margin_set.py` -> benchmarks/results/margin_set.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must be set before numpy loads
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from stepedit_core.dataset import MarginSpec, build_margin_set  # noqa: E402
from stepedit_core.dataset.margin_set import write_margin_set  # noqa: E402
from stepedit_core.dataset.objective import ObjectiveScorer  # noqa: E402
from stepedit_core.dataset.scorers import Pair  # noqa: E402
from stepedit_core.demo import DEMO_DIR, demo_clips  # noqa: E402
from stepedit_core.executors.local import LocalExecutor  # noqa: E402
from stepedit_core.foundation import audio as audio_io  # noqa: E402
from stepedit_core.foundation.edits import parse_edit  # noqa: E402

from machine import machine_info, one_core, write_result  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "margin_set.json"
ATTRIBUTES = ("speed=faster", "denoise", "loudness=-16", "vad")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    one_core()
    clips = demo_clips()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [
            {"clip_id": f"{c['clip_id']}-{i}", "audio_uri": c["path"], "text": c["text"]}
            for i in range(args.clips)
            for c in [clips[i % len(clips)]]
        ]
        manifest = Path(tmp) / "catalog.parquet"
        pq.write_table(pa.Table.from_pylist(rows), manifest)
        spec = MarginSpec.create(
            str(manifest), list(ATTRIBUTES), tmp, "bench", executor="local",
            allow_roots=[str(DEMO_DIR)], report="none",
        )  # fmt: skip
        start = time.perf_counter()
        summary = build_margin_set(spec, executor=LocalExecutor())
        total_s = time.perf_counter() - start
        record = json.loads((Path(tmp) / "bench" / "run.json").read_text())
        start = time.perf_counter()
        write_margin_set(spec, record)
        set_s = time.perf_counter() - start
        sft = pq.read_table(Path(tmp) / "bench" / "dataset" / "sft.parquet").to_pylist()
        per_attribute = {}
        timed = [(a, a, ObjectiveScorer()) for a in ATTRIBUTES]
        timed.append(("denoise --dnsmos", "denoise", ObjectiveScorer(dnsmos=True)))
        for label, attribute, scorer in timed:
            times = []
            for row in (r for r in sft if r["attribute"] == attribute and r["status"] == "ok"):
                pair = Pair(
                    parse_edit(attribute),
                    audio_io.load(row["neutral_uri"])[0],
                    audio_io.load(row["edited_uri"])[0],
                )
                begin = time.perf_counter()
                scorer.score(pair)
                times.append(time.perf_counter() - begin)
            per_attribute[label] = {
                "pairs": len(times),
                "median_score_ms": round(1000 * statistics.median(times), 2) if times else None,
            }
            if label == attribute:
                per_attribute[label]["kept_at_6"] = summary["attributes"][attribute]["kept"]
    pairs = len(rows) * len(ATTRIBUTES)
    result = {
        "benchmark": "margin_set",
        "input": f"{len(rows)} demo clips (3-5 s, 24 kHz mono) x {len(ATTRIBUTES)} attributes",
        "pairs": pairs,
        "threads": 1,
        "note": "shared 2-core machine under load from other users; local executor, one core",
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "run_and_set_s": round(total_s, 2),
        "set_only_s": round(set_s, 2),
        "set_pairs_per_s": round(pairs / set_s, 2),
        "scorer_per_attribute": per_attribute,
        "machine": machine_info(),
    }
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
