"""Cost of each QC metric and of ACX mastering, single-threaded, as x real time.

Input: the demo clips tiled to --seconds of 24 kHz mono speech, each clip keeping its own pauses
(so VAD, the floor and the spectra see real speech), plus a 30 s version for the per-clip
heavy metrics. The process is pinned to one CPU and torch / BLAS / onnxruntime get one thread.
Speed is audio seconds per wall second, the median of --repeat runs after one warm-up run (model
loading is reported apart). Heavy metrics are reported as "not installed" without the
qc-heavy extra.

Run: `python benchmarks/qc_metrics.py` -> benchmarks/results/qc_metrics.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must be set before numpy loads
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from stepedit_core.foundation.audio import Audio  # noqa: E402
from stepedit_core.quality import qc  # noqa: E402
from stepedit_core.signal.loudness import (  # noqa: E402
    match_level,
    normalize,
    true_peak_dbtp,
)
from stepedit_core.signal.vad import shared_vad  # noqa: E402

from machine import machine_info, one_core, timed_runs, write_result  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "qc_metrics.json"
RATE = 24000
EXTRA_PACKAGES = ("speechmos", "resemblyzer", "onnxruntime", "librosa", "scipy")


def load_speech(seconds: float) -> np.ndarray:
    pieces = []
    for path in sorted((ROOT / "stepedit_core" / "demo").glob("*.flac")):
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        pieces.append(mono if rate == RATE else soxr.resample(mono, rate, RATE))
    joined = np.concatenate(pieces)
    return np.resize(joined, round(seconds * RATE)).astype(np.float32)[:, None]


def median_time(func: Callable[[], object], repeat: int) -> float:
    func()  # warm-up: model loading, JIT, caches
    return statistics.median(timed_runs(func, repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    one_core()

    start = time.perf_counter()
    shared_vad()
    load_s = {"silero-vad": round(time.perf_counter() - start, 3)}

    long = load_speech(args.seconds)
    clip = long[: 30 * RATE]  # heavy metrics: one 30 s clip
    audio, source = Audio(long, RATE), Audio(long.copy(), RATE)
    mono16 = qc.mono_16k(long, RATE)
    spans16 = [(a * 2 // 3, b * 2 // 3) for a, b in shared_vad().speech(long, RATE, 0.1)]
    reference = qc.reference(source)

    cheap: dict[str, Callable[[], object]] = {
        "basic_metrics (duration, peak, rms, clipped)": lambda: qc.basic_metrics(audio),
        "loudness_lufs": lambda: qc.loudness_lufs(long, RATE),
        "loudness_range_lu": lambda: qc.loudness_range_lu(long, RATE),
        "true_peak_dbtp (4x soxr)": lambda: true_peak_dbtp(long, RATE),
        "noise_floor_db": lambda: qc.noise_floor_db(long, RATE),
        "speech spans (silero-vad): speech_ratio, head/tail": lambda: qc.speech_spans(long, RATE),
        "ltas_distance_db (given the spans)": lambda: qc.long_term_spectrum(mono16, spans16),
        "measure(): all cheap metrics, source reference given": lambda: qc.measure(
            audio, reference
        ),
        "loudness=acx, level only (match_level)": lambda: match_level(long, RATE, "acx"),
        "loudness=acx, whole profile (mastering)": lambda: normalize(long, RATE, "acx"),
    }
    rows = []
    seconds = long.shape[0] / RATE
    for name, func in cheap.items():
        wall = median_time(func, args.repeat)
        rows.append({"metric": name, "audio_s": seconds, "wall_s": round(wall, 4),
                     "x_real_time": round(seconds / wall, 1)})  # fmt: skip

    heavy_ok = qc.dnsmos_unavailable() is None and qc.similarity_unavailable() is None
    clip16 = qc.mono_16k(clip, RATE)
    clip_s = clip.shape[0] / RATE
    if heavy_ok:
        start = time.perf_counter()
        qc.dnsmos(clip16[:RATE])
        load_s["dnsmos (onnx sessions, librosa)"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        qc.speaker_embedding(clip16)
        load_s["resemblyzer"] = round(time.perf_counter() - start, 3)
        heavy = {
            "dnsmos_* (4 scores)": lambda: qc.dnsmos(clip16),
            "speaker embedding (one side of speaker_similarity)": lambda: qc.speaker_embedding(
                clip16
            ),
        }
        for name, func in heavy.items():
            wall = median_time(func, args.repeat)
            rows.append({"metric": name, "audio_s": clip_s, "wall_s": round(wall, 4),
                         "x_real_time": round(clip_s / wall, 1)})  # fmt: skip
    else:
        for name in ("dnsmos_*", "speaker_similarity"):
            rows.append({"metric": name, "audio_s": clip_s, "wall_s": None,
                         "x_real_time": "not installed"})  # fmt: skip

    info = machine_info()
    for name in EXTRA_PACKAGES:
        try:
            info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["packages"][name] = None
    result = {
        "benchmark": "qc_metrics",
        "input": f"demo clips tiled to {seconds:.0f} s, 24 kHz mono; heavy: {clip_s:.0f} s",
        "threads": 1,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "repeat": args.repeat,
        "model_load_s": load_s,
        "results": rows,
        "machine": info,
    }
    write_result(args.out, result)
    print(f"{seconds:.0f} s of {RATE} Hz mono speech; one core; median of {args.repeat}")
    for row in rows:
        print(f"{row['metric']:58} {row['x_real_time']!s:>14}")
    print("model load (s):", load_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
