"""Speed of each signal-engine edit, single-threaded, next to sox and ffmpeg doing the same job.

Input: ~60 s of 24 kHz mono speech (the demo clips tiled, when they are built; otherwise the
synthetic speech-like signal from tests/signal_fixtures.py), with white noise 20 dB down.
Everything runs on one core: the process is pinned to one CPU (children inherit it), torch and
BLAS get one thread, ffmpeg gets `-threads 1 -filter_threads 1`. Speed is reported as x real
time (audio seconds per wall second; the median of --repeat runs). sox and ffmpeg timings
include starting the program and reading/writing a WAV file; the `copy` rows measure exactly
that overhead. Tools that are not installed are reported as "not installed".

Run: `python benchmarks/signal_edits.py` -> benchmarks/results/signal_edits.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must be set before numpy loads
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from stepedit_core.engines.signal import SignalEngine  # noqa: E402
from stepedit_core.foundation.edits import parse_edit  # noqa: E402

from machine import machine_info, one_core, timed_runs, write_result  # noqa: E402
from signal_fixtures import utterance, white_noise  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "signal_edits.json"
RATE = 24000
EXTRA_PACKAGES = ("noisereduce", "scipy", "soundfile")


def load_audio(seconds: float) -> tuple[np.ndarray, str]:
    demo = sorted((ROOT / "stepedit_core" / "demo").glob("*.flac"))
    pieces = []
    for path in demo:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        if rate != RATE:
            mono = soxr.resample(mono, rate, RATE)
        pieces.append(mono)
    if pieces:
        joined = np.concatenate(pieces)
        source = f"demo clips ({len(pieces)} files, tiled)"
    else:
        layout = []
        for i in range(12):
            layout += [("pause", 0.3 + 0.1 * (i % 5)), ("speech", 1.5 + 0.3 * (i % 4))]
        joined, _ = utterance(layout, RATE)
        source = "synthetic speech-like signal (tests/signal_fixtures.py)"
    frames = round(seconds * RATE)
    signal = np.resize(joined, frames).astype(np.float32)
    level = float(np.sqrt(np.mean(np.square(signal, dtype=np.float64))))
    signal += white_noise(frames, level * 10 ** (-20 / 20), seed=9)
    return signal[:, None], source


def tool_version(binary: str, flag: str) -> str | None:
    path = shutil.which(binary)
    if path is None:
        return None
    out = subprocess.run([path, flag], capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def external_jobs(wav: Path, out: Path) -> list[tuple[str, str, str, list[str]]]:
    """(edit, tool, binary, argv) for the sox and ffmpeg equivalents."""
    ff = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-threads",
        "1",
        "-filter_threads",
        "1",
        "-i",
        str(wav),
    ]
    return [
        ("copy (startup + WAV I/O)", "sox", "sox", ["sox", str(wav), str(out)]),
        ("speed=1.25", "sox tempo", "sox", ["sox", str(wav), str(out), "tempo", "-s", "1.25"]),
        ("speed=0.8", "sox tempo", "sox", ["sox", str(wav), str(out), "tempo", "-s", "0.8"]),
        ("copy (startup + WAV I/O)", "ffmpeg", "ffmpeg", [*ff, str(out)]),
        ("speed=1.25", "ffmpeg atempo", "ffmpeg", [*ff, "-af", "atempo=1.25", str(out)]),
        ("speed=0.8", "ffmpeg atempo", "ffmpeg", [*ff, "-af", "atempo=0.8", str(out)]),
        ("denoise", "ffmpeg afftdn", "ffmpeg", [*ff, "-af", "afftdn", str(out)]),
        (
            "loudness=ebu",
            "ffmpeg loudnorm (one pass)",
            "ffmpeg",
            [*ff, "-af", "loudnorm=I=-23:TP=-1:LRA=20", "-ar", str(RATE), str(out)],
        ),
        (
            "loudness=ebu (measure only)",
            "ffmpeg loudnorm print_format=json",
            "ffmpeg",
            [*ff, "-af", "loudnorm=I=-23:TP=-1:print_format=json", "-f", "null", "-"],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    one_core()

    audio, source = load_audio(args.seconds)
    seconds = audio.shape[0] / RATE
    (stage,) = SignalEngine().build_stages()
    start = time.perf_counter()
    stage.setup()
    setup_s = time.perf_counter() - start

    rows: list[dict] = []

    def record(edit: str, tool: str, times: list[float] | None, note: str = "") -> None:
        if times is None:
            rows.append({"edit": edit, "tool": tool, "status": note or "not installed"})
            return
        median = statistics.median(times)
        rows.append(
            {
                "edit": edit,
                "tool": tool,
                "status": "ok",
                "seconds": round(median, 4),
                "x_realtime": round(seconds / median, 1),
                "runs_s": [round(t, 4) for t in times],
            }
        )

    ours = {
        "speed=1.25": "stepedit signal (python-stretch)",
        "speed=0.8": "stepedit signal (python-stretch)",
        "denoise": f"stepedit signal ({stage.denoise_backend}, via 48 kHz)",
        "vad": "stepedit signal (silero-vad + cut)",
        "loudness=ebu": "stepedit signal (pyloudnorm + true-peak limiter)",
        "loudness=-16": "stepedit signal (pyloudnorm + true-peak limiter)",
        "loudness=acx": "stepedit signal (RMS + limiter)",
    }
    for edit, tool in ours.items():
        spec = parse_edit(edit)
        stage.apply(spec, audio, RATE)  # warm-up (first calls load code paths)
        record(edit, tool, timed_runs(lambda s=spec: stage.apply(s, audio, RATE), args.repeat))

    import noisereduce

    mono = audio[:, 0]
    record(
        "denoise",
        "noisereduce (non-stationary, fallback)",
        timed_runs(lambda: noisereduce.reduce_noise(y=mono, sr=RATE, n_jobs=1), args.repeat),
    )

    import pyloudnorm

    meter = pyloudnorm.Meter(RATE)
    record(
        "loudness=ebu (measure only)",
        "pyloudnorm integrated_loudness",
        timed_runs(lambda: meter.integrated_loudness(audio.astype(np.float64)), args.repeat),
    )

    with tempfile.TemporaryDirectory() as tmp:
        wav, out = Path(tmp) / "in.wav", Path(tmp) / "out.wav"
        sf.write(wav, audio, RATE, subtype="FLOAT")
        for edit, tool, binary, command in external_jobs(wav, out):
            if shutil.which(binary) is None:
                record(edit, tool, None)
                continue
            subprocess.run(command, check=True, capture_output=True)  # warm the page cache
            record(
                edit,
                tool,
                timed_runs(
                    lambda c=command: subprocess.run(c, check=True, capture_output=True),
                    args.repeat,
                ),
            )

    info = machine_info()
    for name in EXTRA_PACKAGES:
        try:
            info["packages"][name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info["packages"][name] = None
    info["tools"] = {
        "sox": tool_version("sox", "--version"),
        "ffmpeg": tool_version("ffmpeg", "-version"),
    }
    if hasattr(os, "sched_getaffinity"):
        info["pinned_cpus"] = sorted(os.sched_getaffinity(0))
    import torch

    info["torch_threads"] = torch.get_num_threads()
    result = {
        "benchmark": "signal_edits",
        "audio": {
            "seconds": round(seconds, 3),
            "sample_rate": RATE,
            "channels": 1,
            "source": source,
            "noise": "white, 20 dB under the speech RMS",
        },
        "setup_s": round(setup_s, 3),
        "repeat": args.repeat,
        "machine": info,
        "results": rows,
    }
    write_result(args.out, result)

    print(f"{seconds:.1f} s of {RATE} Hz mono ({source}); one core; median of {args.repeat}")
    print(f"{'edit':30} {'tool':48} {'x real time':>12}")
    for row in rows:
        speed = f"{row['x_realtime']:.1f}" if row["status"] == "ok" else row["status"]
        print(f"{row['edit']:30} {row['tool']:48} {speed:>12}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
