"""Round records on the item (before) or handed to the round channel as each round ends (after):
an item's pickled size after each round, and what the Ray channel costs per record.

Item size: a 30 s, 44.1 kHz mono clip (long enough to travel by reference), edit
`loudness=-20`, --rounds rounds of the signal engine with the product's default QC, the item
pickled after each round's end as it is between Ray pools. Each tree runs in a child process
whose source is this one ("after") or an export of another git revision (`--before REV`).

Channel cost (this tree only): a one-CPU local Ray cluster, the round channel's actor, and
--records records (real ones, sealed by the round end) put one batch at a time from a Ray task
(each put waits until the actor holds them, as the round end does; a process's first put
also looks the actor up) and taken one row at a time by the driver (as the shard writer does).
Wall times on a shared, loaded 2-core machine are indicative only.

Run: `python benchmarks/round_handoff.py [--rounds 5] [--before main] [--records 400]`
-> benchmarks/results/round_handoff.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "round_handoff.json"
EDIT = "loudness=-20"
RATE = 44100


def item_sizes(clip: str, workdir: str, rounds: int) -> list[int]:
    """In the child: the item's pickled size after each round's end."""
    from stepedit_core.engines import make_engine
    from stepedit_core.foundation.clip_spec import ClipSpec
    from stepedit_core.foundation.edits import parse_chain
    from stepedit_core.foundation.stages import WorkItem
    from stepedit_core.lifecycle.rounds import RoundEnd, build_stages

    item = WorkItem(ClipSpec(0, "clip", clip, parse_chain(EDIT)))
    item.audio_dir = str(Path(workdir) / "objects")
    sizes = []
    for stage in build_stages(make_engine("signal"), rounds, with_clone_round=False):
        if stage.needs_actor:
            stage.setup()
        (item,) = stage.process_batch([item])
        if isinstance(stage, RoundEnd):
            sizes.append(len(pickle.dumps(item)))
    if item.failed:
        raise RuntimeError(f"the clip failed: {item.error}")
    return sizes


def channel_cost(records: int, batch: int) -> dict[str, Any]:
    """Put `records` sealed records through the Ray channel in batches, take them by row."""
    import numpy as np
    import ray

    from stepedit_core.executors.ray_data import RayDataExecutor
    from stepedit_core.foundation.audio import Audio
    from stepedit_core.foundation.clip_spec import ClipSpec
    from stepedit_core.foundation.edits import parse_chain
    from stepedit_core.foundation.stages import WorkItem
    from stepedit_core.lifecycle.round_handoff import RoundRecordStore, take_records
    from stepedit_core.lifecycle.rounds import RoundEnd, StartRound

    audio = Audio(np.full(4800, 0.1, np.float32), 24000)
    items = []
    for row in range(records):
        item = WorkItem(ClipSpec(row, f"c{row}", "a.wav", parse_chain(EDIT)), audio=audio)
        item.source_sha256, item.attempt = "s" * 64, 1
        StartRound(1, "chain").process_batch([item])
        item.output = audio
        items.append(item)
    local = RoundRecordStore()
    RoundEnd(1, "signal", "1", local).process_batch(items)
    handed = [(1, r) for row in range(records) for r in local.take_row(row, 1)]
    record_bytes = sum(len(pickle.dumps(r)) for _, r in handed) / len(handed)

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        opened = time.perf_counter()
        with RayDataExecutor().round_channel() as channel:
            channel.held()  # the actor has started: its start is not the puts' cost
            ready_s = time.perf_counter() - opened
            sink = channel.sink

            @ray.remote(num_cpus=0)
            def put_all(batches: list[list[Any]]) -> list[float]:
                spent = []
                for part in batches:
                    start = time.perf_counter()
                    sink.put(part)
                    spent.append(time.perf_counter() - start)
                return spent

            batches = [handed[i : i + batch] for i in range(0, len(handed), batch)]
            put_s = ray.get(put_all.remote(batches))
            start = time.perf_counter()
            taken = sum(len(take_records(channel, item)) for item in items)
            take_s = time.perf_counter() - start
            assert taken == records and channel.held() == 0
    finally:
        ray.shutdown()
    return {
        # from opening the channel until its actor answers (it starts beside the run's pools)
        "channel_ready_s": round(ready_s, 3),
        "records": records,
        "put_batch": batch,
        "record_pickled_bytes_mean": round(record_bytes),
        # the first put of a worker process looks the actor up by name
        "first_put_ms": round(1000 * put_s[0], 2),
        "put_ms_per_batch_median_after_first": round(1000 * statistics.median(put_s[1:]), 2),
        "take_ms_per_clip": round(1000 * take_s / records, 2),
    }


def child(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {"item_pickled_bytes_after_round": item_sizes(
        args.clip, args.workdir, args.rounds
    )}  # fmt: skip
    if args.channel:
        result["ray_channel"] = channel_cost(args.records, args.batch)
    print("RESULT " + json.dumps(result), flush=True)


def run_child(src: Path, args: argparse.Namespace, clip: str, workdir: Path, channel: bool) -> Any:
    env = dict(os.environ, PYTHONPATH=str(src), RAY_AUTH_MODE="disabled", RAY_ADDRESS="local")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--clip", clip,
           "--workdir", str(workdir), "--rounds", str(args.rounds), "--records",
           str(args.records), "--batch", str(args.batch)]  # fmt: skip
    cmd += ["--channel"] if channel else []
    workdir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"child under {src} failed:\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", default="main", help="git revision of the 'before' code")
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32, help="records per put (RoundEnd's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--channel", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    sys.path[:0] = [str(Path(__file__).resolve().parent)]
    import numpy as np
    import soundfile as sf

    from machine import export, machine_info, write_result

    load_start = list(os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        clip = base / "clip.flac"
        t = np.arange(30 * RATE) / RATE
        sf.write(clip, 0.2 * np.sin(2 * np.pi * 180 * t), RATE, subtype="PCM_24")
        before_src = export(args.before, base / "before-src")
        before = run_child(before_src, args, str(clip), base / "before", channel=False)
        after = run_child(ROOT, args, str(clip), base / "after", channel=True)
    payload = {
        "benchmark": "round_handoff",
        "clip": {"seconds": 30, "sample_rate": RATE, "channels": 1},
        "edit": EDIT,
        "rounds": args.rounds,
        "before_revision": args.before,
        "before": before,
        "after": after,
        "note": "shared 2-core machine under load from other work: times are indicative; item "
        "sizes are exact",
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "machine": machine_info(),
    }
    write_result(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
