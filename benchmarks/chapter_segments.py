"""What segmenting a chapter for the model costs beyond the model itself, one core.

Input: dynamic narration from tests/signal_fixtures.py (`narration`), a few minutes generated and
tiled to --minutes at 24 kHz mono (the model's output rate). Timed once each: the split plan
(silero-vad over the chapter, cuts in the longest pause near --segment-seconds) and the stitch
of the segments back into one clip (silero-vad per segment for the room tone, level match and
equal-power crossfades), the segments going through unedited so the join quality is measured
against the chapter itself. Recorded: segments, seconds per step, x real time per core, peak
resident memory, and at each join the sample step against the largest step within 10 ms around
it (1.0 or less: no click).

Run: `python benchmarks/chapter_segments.py [--minutes 30]`
-> benchmarks/results/chapter_segments.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must be set before numpy loads
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from stepedit_core.catalog.segments import DEFAULT_SEGMENT_S, plan  # noqa: E402
from stepedit_core.catalog.stitch import stitch  # noqa: E402
from stepedit_core.quality import qc  # noqa: E402

from machine import machine_info, one_core, write_result  # noqa: E402
from signal_fixtures import narration  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "chapter_segments.json"
RATE = 24000
TILE_S = 180.0


def timed(func):
    start = time.perf_counter()
    value = func()
    return value, time.perf_counter() - start


def join_ratios(x: np.ndarray, joins: list[int]) -> list[float]:
    """Step at each join over the largest step within 10 ms either side of it."""
    window = round(0.01 * RATE)
    ratios = []
    for at in joins:
        around = np.concatenate([x[at - window : at - 1], x[at + 1 : at + window]])
        own = float(np.max(np.abs(np.diff(around[:, 0])))) if around.size > 1 else 0.0
        step = float(abs(x[at, 0] - x[at - 1, 0]))
        ratios.append(step / own if own > 0 else 0.0)
    return ratios


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_S)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    one_core()
    load_start = list(os.getloadavg())
    tile = narration(TILE_S, RATE, drift_db=6.0, crest_db=20.0, seed=11)
    reps = int(np.ceil(args.minutes * 60 / TILE_S))
    x = np.tile(tile, (reps, 1))[: round(args.minutes * 60 * RATE)]
    seconds = x.shape[0] / RATE
    pieces, plan_s = timed(
        lambda: plan(x.shape[0], RATE, qc.speech_spans(x, RATE), args.segment_seconds)
    )
    segments = [x[p.start : p.end] for p in pieces]
    (joined, joins), stitch_s = timed(lambda: stitch(segments, RATE, qc.speech_spans))
    ratios = join_ratios(joined, joins)
    result = {
        "benchmark": "chapter_segments",
        "chapter_s": seconds,
        "segment_seconds": args.segment_seconds,
        "segments": len(pieces),
        "longest_segment_s": max((p.end - p.start) / RATE for p in pieces),
        "plan_s": round(plan_s, 2),
        "stitch_s": round(stitch_s, 2),
        "plan_x_realtime_per_core": round(seconds / plan_s, 1),
        "stitch_x_realtime_per_core": round(seconds / stitch_s, 1),
        "length_kept": joined.shape[0] == x.shape[0],
        "largest_join_step_ratio": round(max(ratios), 3) if ratios else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "note": "shared 2-core machine under load from other work; one core pinned; the model's "
        "own time is not included (segments go through unedited)",
        "machine": machine_info(),
    }
    write_result(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
