"""Judging throughput: verdicts per second at 1, 8 and 32 requests in flight, against a local
judge server (the tests' server, both API shapes) that answers after a fixed latency.

Measures what one judge actor does (`Judge.judge_many`: WAV encoding, base64, HTTP, parsing,
sealing), without the verdict cache, so every verdict is a request.

    python benchmarks/judges.py [--latency 0.2] [--api gemini]

Writes benchmarks/results/judges.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from machine import machine_info, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from judge_server import KEY, JudgeServer  # noqa: E402 - the tests' server, found via sys.path

from stepedit_core.judges.http import HttpPolicy  # noqa: E402
from stepedit_core.judges.judge import Judge, JudgeTask  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LEVELS = (1, 8, 32)
SECONDS_PER_LEVEL = 8.0  # requests per level: about this long at the ideal rate


def clip_bytes(seconds: float = 3.0, rate: int = 24000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    path = Path(tempfile.mkdtemp()) / "clip.flac"
    sf.write(path, wave, rate)
    return path.read_bytes()


def through_ray(endpoint: str, args: argparse.Namespace, audio: bytes) -> list[dict]:
    """The same verdicts through the Ray Data executor (`stepedit judge`'s path): one judge
    actor, Ray Data's start-up and the tasks' trips through the object store included."""
    import ray

    from stepedit_core.executors.ray_data import RayDataExecutor
    from stepedit_core.judges.stage import JudgeTasks

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    executor, rows = RayDataExecutor(), []
    for level in LEVELS[1:]:
        count = 320
        tasks = [
            JudgeTask(f"c{i}", i, 1, "emotion", "happy", audio, f"sha{i}", f"rec{i}")
            for i in range(count)
        ]
        judge = Judge(args.api, "bench-model", endpoint, "BENCH_JUDGE_KEY", None, level)
        started = time.perf_counter()
        judged = list(executor.run([JudgeTasks(judge.with_key())], tasks))
        seconds = time.perf_counter() - started
        assert len(judged) == count and all(t.verdict.ok for t in judged)
        rows.append(
            {
                "path": "ray_data_executor",
                "concurrency": level,
                "verdicts": count,
                "seconds": round(seconds, 3),
                "verdicts_per_s": round(count / seconds, 2),
                "ideal_per_s": round(level / args.latency, 2),
            }
        )
        print(rows[-1])
    ray.shutdown()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--api", choices=("gemini", "openai"), default="gemini")
    parser.add_argument(
        "--ray", action="store_true", help="also through the Ray Data executor (one judge actor)"
    )
    args = parser.parse_args()
    import os

    os.environ["BENCH_JUDGE_KEY"] = KEY
    server = JudgeServer(latency_s=args.latency)
    url = server.start()
    endpoint = url + ("/v1" if args.api == "openai" else "")
    audio = clip_bytes()
    rows = []
    try:
        for level in LEVELS:
            count = max(level * 2, int(SECONDS_PER_LEVEL / args.latency * level))
            tasks = [
                JudgeTask(f"c{i}", i, 1, "emotion", "happy", audio, f"sha{i}", f"rec{i}")
                for i in range(count)
            ]
            judge = Judge(args.api, "bench-model", endpoint, "BENCH_JUDGE_KEY", None, level,
                          policy=HttpPolicy(timeout_s=30))  # fmt: skip
            before = server.answered
            started = time.perf_counter()
            verdicts = judge.judge_many(tasks)
            seconds = time.perf_counter() - started
            assert all(v.ok for v in verdicts), [v.error for v in verdicts if not v.ok][:3]
            rows.append(
                {
                    "path": "judge_actor",
                    "concurrency": level,
                    "verdicts": count,
                    "requests": server.answered - before,
                    "seconds": round(seconds, 3),
                    "verdicts_per_s": round(count / seconds, 2),
                    "ideal_per_s": round(level / args.latency, 2),
                    "efficiency": round(count / seconds / (level / args.latency), 3),
                }
            )
            print(rows[-1])
        if args.ray:
            rows += through_ray(endpoint, args, audio)
    finally:
        server.stop()
    result = {
        "benchmark": "judges",
        "api": args.api,
        "server_latency_s": args.latency,
        "clip": "3 s mono 24 kHz FLAC, sent as 16-bit WAV",
        "note": "judge_actor: one judge actor's thread pool (Judge.judge_many) against a local "
        "server in the same process; ray_data_executor: the same through the Ray Data executor "
        "(start-up of the pool included, 320 verdicts). The machine is shared with other "
        "engineers' work (2 cores), so the numbers are a floor",
        "results": rows,
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_result(RESULTS / "judges.json", result)


if __name__ == "__main__":
    main()
