"""Speed of ACX mastering with the narration leveler on a long synthetic chapter, one core.

Input: dynamic narration from tests/signal_fixtures.py (`narration`: speech-like sentences and
pauses, plosive-like bursts, a -50 dB room tone), a few minutes generated and tiled to
--minutes at 44.1 kHz mono, with an 8 dB level drift over the whole chapter. Timed, one core,
once each (a chapter is long enough that one run is the measurement): the leveler alone (given
the speech spans), `loudness=acx` whole (silero-vad, leveler, gate, room tone, level match and
true-peak limiter), QC of the mastered chapter (`qc.measure`), and MP3 delivery (192 kbps CBR,
decoded back and checked for the peak limit). Speed is x real time per core (audio seconds per
wall second). Also recorded: where the mastered chapter landed (RMS, peak) and how much the
leveler did (largest drift correction, largest peak reduction).

Run: `python benchmarks/mastering.py [--minutes 30]` -> benchmarks/results/mastering.json
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

from stepedit_core.engines.signal import leveler  # noqa: E402
from stepedit_core.foundation.audio import Audio  # noqa: E402
from stepedit_core.quality import qc  # noqa: E402
from stepedit_core.quality.encoding import DeliverFormat, encode_under_peak  # noqa: E402
from stepedit_core.signal import loudness  # noqa: E402
from stepedit_core.signal.vad import shared_vad  # noqa: E402

from machine import machine_info, one_core, write_result  # noqa: E402
from signal_fixtures import narration  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "mastering.json"
RATE = 44100
TILE_S = 180.0


def chapter(minutes: float) -> np.ndarray:
    tile = narration(TILE_S, RATE, drift_db=0.0, crest_db=26.0, seed=7)[:, 0]
    reps = int(np.ceil(minutes * 60 / TILE_S))
    x = np.tile(tile, reps)[: round(minutes * 60 * RATE)]
    t = np.linspace(0.0, 1.0, x.shape[0], dtype=np.float32)
    x *= (10 ** ((8.0 * t - 4.0) / 20)).astype(np.float32)  # -4 dB rising to +4 dB
    return (0.9 * x / np.abs(x).max())[:, None].astype(np.float32)


def timed(func):
    start = time.perf_counter()
    value = func()
    return value, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    one_core()
    load_start = list(os.getloadavg())
    x = chapter(args.minutes)
    seconds = x.shape[0] / RATE
    rms = float(20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2))))
    spans, vad_s = timed(lambda: shared_vad().speech(x, RATE, 0.1))
    leveled, level_s = timed(lambda: leveler.level_speech(x, RATE, spans, -20.0, (-23, -18), -3))
    mastered, master_s = timed(lambda: loudness.normalize(x, RATE, "acx"))
    report, qc_s = timed(lambda: qc.measure(Audio(mastered, RATE)))
    fmt = DeliverFormat("mp3", 192, mono=True)
    (data, decoded, trim), mp3_s = timed(lambda: encode_under_peak(Audio(mastered, RATE), fmt, -3))
    m = report.metrics
    speed = {
        "silero_vad": seconds / vad_s,
        "leveler_only": seconds / level_s,
        "loudness_acx_whole": seconds / master_s,
        "qc_measure": seconds / qc_s,
        "mp3_encode_and_check": seconds / mp3_s,
    }
    result = {
        "benchmark": "mastering",
        "note": "one core (pinned), on a shared 2-core machine under load from other jobs: "
        "absolute speeds are lower bounds and vary between runs",
        "load_average_1_5_15": {"start": load_start, "end": list(os.getloadavg())},
        "input": {
            "minutes": args.minutes,
            "sample_rate": RATE,
            "crest_factor_db": round(float(20 * np.log10(np.abs(x).max())) - rms, 2),
            "rms_dbfs": round(rms, 2),
            "drift_db": 8.0,
        },
        "wall_s": {
            "silero_vad": round(vad_s, 2),
            "leveler_only": round(level_s, 2),
            "loudness_acx_whole": round(master_s, 2),
            "qc_measure": round(qc_s, 2),
            "mp3_encode_and_check": round(mp3_s, 2),
        },
        "x_real_time_per_core": {k: round(v, 1) for k, v in speed.items()},
        "leveler": {
            "aim_db": round(leveled.aim_db, 2),
            "largest_drift_correction_db": round(leveled.drift_db, 2),
            "largest_peak_reduction_db": round(leveled.compression_db, 2),
        },
        "mastered": {k: m.get(k) for k in ("rms_dbfs", "peak_dbfs", "noise_floor_db")},
        "mp3": {
            "bytes": len(data),
            "trim_db": round(trim, 3),
            "decoded_peak_dbfs": round(float(20 * np.log10(np.abs(decoded.samples).max())), 2),
            "decoded_rms_dbfs": round(
                float(20 * np.log10(np.sqrt(np.mean(decoded.samples.astype(np.float64) ** 2)))), 2
            ),
        },
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "machine": machine_info(),
    }
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("wall_s", "x_real_time_per_core", "mastered")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
