"""Speech detection: silero-vad's JIT model (torch, the silero_vad package) against its ONNX
model as the product runs it (onnxruntime, stepedit_core.signal.silero_onnx), side by side.

- start-up: a fresh interpreter imports a model's runtime and loads the model (onnxruntime and
  the product's session, or torch and `silero_vad.load_silero_vad()`), and the product's whole
  detector module with its model; wall and CPU seconds, median of --starts
- scoring: the model over the demo clips tiled to --seconds of 16 kHz mono, window by window with
  state carried, one thread; seconds per minute of audio, median of --repeat after a warm-up
- spans: the product's whole `speech()` (24 kHz mono in: resampling, scores, span rules, edge
  refinement) on the same audio, seconds per minute of audio

The process is pinned to one core (torch: one thread), as the product scores on one thread.

Run: `python benchmarks/vad.py` -> benchmarks/results/vad.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from stepedit_core.signal.silero_onnx import MODEL_RATE, WINDOW  # noqa: E402
from stepedit_core.signal.vad import shared_vad  # noqa: E402

from machine import machine_info, one_core, timed_runs, write_result  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "vad.json"
SPEECH_RATE = 24000  # the demo clips' rate: what `speech()` is given

# each prints: wall seconds, CPU seconds, whether torch got imported
START_UP = {
    "onnx model (onnxruntime session, silero_onnx.load_session)": (
        "from stepedit_core.signal.silero_onnx import load_session\nload_session()"
    ),
    "jit model (torch, silero_vad.load_silero_vad)": (
        "from silero_vad import load_silero_vad\nload_silero_vad()"
    ),
    # the detector's module also reaches scipy.signal (its meters), before and after
    "stepedit_core.signal.vad + shared_vad()": (
        "from stepedit_core.signal.vad import shared_vad\nshared_vad()"
    ),
    "scipy.signal alone": "import scipy.signal",
}
START_UP_FRAME = """
import resource, sys, time
start = time.perf_counter()
{body}
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(wall, usage.ru_utime + usage.ru_stime, "torch" in sys.modules)
"""


def tiled_speech(seconds: float, rate: int) -> np.ndarray:
    """The demo clips, mono at `rate`, one after another and repeated to `seconds`."""
    pieces = []
    for path in sorted((ROOT / "stepedit_core" / "demo").glob("*.flac")):
        samples, clip_rate = sf.read(path, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        pieces.append(mono if clip_rate == rate else soxr.resample(mono, clip_rate, rate))
    return np.resize(np.concatenate(pieces), round(seconds * rate)).astype(np.float32)


def start_up(body: str, starts: int) -> dict:
    walls, cpus, torch_loaded = [], [], set()
    for _ in range(starts):
        out = subprocess.run(
            [sys.executable, "-c", START_UP_FRAME.format(body=body)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.split()
        walls.append(float(out[0]))
        cpus.append(float(out[1]))
        torch_loaded.add(out[2] == "True")
    return {
        "wall_s": round(statistics.median(walls), 3),
        "cpu_s": round(statistics.median(cpus), 3),
        "samples_wall_s": [round(w, 3) for w in walls],
        "imports_torch": torch_loaded == {True},
    }


def jit_scorer():
    import torch
    from silero_vad import load_silero_vad

    model = load_silero_vad()
    torch.set_num_threads(1)

    def score(audio16: np.ndarray) -> list[float]:
        model.reset_states()
        tensor = torch.from_numpy(audio16)
        with torch.inference_mode():
            return [
                float(model(tensor[at : at + WINDOW], MODEL_RATE).item())
                for at in range(0, audio16.shape[0], WINDOW)
            ]

    return score


def onnx_scorer():
    vad = shared_vad()
    return lambda audio16: vad.scorer().score(audio16)


def per_minute(func, audio_s: float, repeat: int) -> dict:
    func()  # warm-up
    times = timed_runs(func, repeat)
    wall = statistics.median(times)
    return {
        "s_per_audio_minute": round(wall * 60 / audio_s, 4),
        "x_real_time": round(audio_s / wall, 1),
        "samples_s": [round(t, 4) for t in times],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    one_core()  # the start-up subprocesses inherit the core

    starts = {name: start_up(body, args.starts) for name, body in START_UP.items()}
    audio16 = tiled_speech(args.seconds, MODEL_RATE)
    audio16 = audio16[: audio16.shape[0] // WINDOW * WINDOW]
    audio_s = audio16.shape[0] / MODEL_RATE
    jit, onnx = jit_scorer(), onnx_scorer()
    difference = float(np.max(np.abs(np.array(jit(audio16)) - np.array(onnx(audio16)))))
    scoring = {
        "jit (torch, one thread)": per_minute(lambda: jit(audio16), audio_s, args.repeat),
        "onnx (onnxruntime, one thread)": per_minute(lambda: onnx(audio16), audio_s, args.repeat),
    }
    speech = tiled_speech(args.seconds, SPEECH_RATE)[:, None]
    spans = per_minute(
        lambda: shared_vad().speech(speech, SPEECH_RATE, 0.1), args.seconds, args.repeat
    )

    info = machine_info()
    info["packages"]["onnxruntime"] = metadata.version("onnxruntime")
    result = {
        "benchmark": "vad",
        "input": f"demo clips tiled to {audio_s:.1f} s, 16 kHz mono (spans: 24 kHz mono)",
        "threads": 1,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "repeat": args.repeat,
        "start_up": starts,
        "scoring": scoring,
        "max_abs_score_difference": difference,
        "speech_spans_onnx": spans,
        "machine": info,
    }
    write_result(args.out, result)
    print(f"start-up (fresh interpreter, median of {args.starts}):")
    for name, row in starts.items():
        print(f"  {name:60} wall {row['wall_s']:6.3f} s  cpu {row['cpu_s']:6.3f} s")
    print(f"scoring {audio_s:.0f} s of audio (median of {args.repeat}):")
    for name, row in scoring.items():
        print(f"  {name:60} {row['s_per_audio_minute']:8.4f} s per audio minute")
    print(f"  {'speech() spans, onnx':60} {spans['s_per_audio_minute']:8.4f} s per audio minute")
    print(f"max |jit - onnx| score: {difference:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
