"""Judge margin throughput: pairs scored per second at 1, 8 and 32 requests in flight, against a
local judge server (the tests' server) that answers after a fixed latency.

Measures the judge margin scorer as a margin set runs it (`JudgeScorer.score` on a thread pool
of `--concurrency` workers: two WAV encodings, base64, one HTTP request with both recordings,
parsing), without the answer cache, so every pair is a request.

    python benchmarks/judge_margins.py [--latency 0.2] [--api gemini]

Writes benchmarks/results/judge_margins.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from machine import machine_info, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from judge_server import KEY, JudgeServer  # noqa: E402 - the tests' server, found via sys.path

from stepedit_core.dataset.judge_scorer import JudgeScorer  # noqa: E402
from stepedit_core.dataset.scorers import Pair  # noqa: E402
from stepedit_core.foundation.audio import Audio  # noqa: E402
from stepedit_core.foundation.edits import parse_edit  # noqa: E402
from stepedit_core.judges.spec import JudgeSpec  # noqa: E402

RESULTS = Path(__file__).parent / "results"
LEVELS = (1, 8, 32)
SECONDS_PER_LEVEL = 8.0  # pairs per level: about this long at the ideal rate


def clip(seconds: float, rate: int = 24000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    wave = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    return Audio(wave[:, None], rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--api", choices=("gemini", "openai"), default="gemini")
    args = parser.parse_args()
    os.environ["BENCH_JUDGE_KEY"] = KEY
    server = JudgeServer(latency_s=args.latency, rule_all=lambda prompt, wavs: '{"margin": 7}')
    url = server.start()
    endpoint = url + ("/v1" if args.api == "openai" else "")
    pair = Pair(parse_edit("emotion=happy"), clip(3.0), clip(3.2))
    rows = []
    try:
        for level in LEVELS:
            count = max(level * 2, int(SECONDS_PER_LEVEL / args.latency * level))
            spec = JudgeSpec(kind=args.api, endpoint=endpoint, model="bench-model",
                             key_env="BENCH_JUDGE_KEY", concurrency=level)  # fmt: skip
            scorer = JudgeScorer(spec, cache_root=None)
            before = server.answered
            started = time.perf_counter()
            with ThreadPoolExecutor(scorer.concurrency) as pool:
                margins = list(pool.map(scorer.score, [pair] * count))
            seconds = time.perf_counter() - started
            assert all(m.value == 7 for m in margins), [m.note for m in margins][:3]
            rows.append(
                {
                    "concurrency": level,
                    "pairs": count,
                    "requests": server.answered - before,
                    "seconds": round(seconds, 3),
                    "pairs_per_s": round(count / seconds, 2),
                    "ideal_per_s": round(level / args.latency, 2),
                    "efficiency": round(count / seconds / (level / args.latency), 3),
                }
            )
            print(rows[-1])
    finally:
        server.stop()
    result = {
        "benchmark": "judge_margins",
        "api": args.api,
        "server_latency_s": args.latency,
        "pair": "3.0 s and 3.2 s mono 24 kHz clips, both sent as 16-bit WAV in one request",
        "note": "the judge margin scorer on a thread pool of `concurrency` workers (as a margin "
        "set scores a batch) against a local server in the same process, no cache. The machine "
        "is shared with other engineers' work (2 cores, loaded), so the numbers are a floor",
        "results": rows,
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "judge_margins.json"
    write_result(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
