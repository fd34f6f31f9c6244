"""Round audio by bytes (before) or by reference (after): peak memory per process and an item's
pickled size, for one chapter through several rounds, local and Ray executors.

Input: the synthetic chapter of benchmarks/mastering.py (44.1 kHz mono), --minutes long, as a
24-bit FLAC in a one-row manifest; edit `loudness=-20`, --rounds iterations, the product's
default QC. Each configuration runs `run_job` in a child process whose source tree is either
this one ("after") or an export of another git revision (`--before REV`, default `main`):
- peak RSS of every process of the run (the driver, and on Ray its workers), sampled every
  0.1 s with psutil over the child's process tree; reported per process and the largest;
- the item's pickled size after each round (the same stages run in the child's process, item
  pickled after each round's end, as it is between Ray pools);
- wall time (the machine is shared and loaded: times are indicative only).
Keep --minutes at 20 or under for the old code (its memory grows with the chapter).

Run: `python benchmarks/round_payload.py [--minutes 10] [--rounds 3] [--before main]`
-> benchmarks/results/round_payload.json
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "round_payload.json"
EDIT = "loudness=-20"


# --- in the child process (its stepedit_core is the tree under test) ------------------------


def child(args: argparse.Namespace) -> None:
    """One run (`--executor`), then the item's pickled size after each round."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stepedit_core.lifecycle.job import JobSpec
    from stepedit_core.lifecycle.run import run_job

    out = Path(args.workdir) / f"runs-{args.executor}"
    # next to the chapter: a run reads audio under its manifest's folder
    manifest = Path(args.chapter).parent / f"{Path(args.workdir).name}.parquet"
    if not manifest.exists():
        pq.write_table(pa.table({"clip_id": ["chapter"], "audio_uri": [args.chapter]}), manifest)
    job = JobSpec(
        manifest_uri=str(manifest),
        out=str(out),
        run_id="book",
        edits=[EDIT],
        iterations=args.rounds,
        executor=args.executor,
        report="none",
    )
    start = time.perf_counter()
    if args.executor == "ray":
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        record = run_job(job)
        ray.shutdown()
    else:
        from stepedit_core.executors.local import LocalExecutor

        record = run_job(job, executor=LocalExecutor())
    wall = time.perf_counter() - start
    if record["counts"]["ok"] != 1:
        raise RuntimeError(f"the chapter did not finish: {record['counts']}")
    result = {"wall_s": round(wall, 1), "counts": record.get("counts")}
    if args.executor == "local":
        result["item_pickled_bytes_after_round"] = item_sizes(args, out)
    print("RESULT " + json.dumps(result), flush=True)


def item_sizes(args: argparse.Namespace, out: Path) -> list[int]:
    from stepedit_core.engines import make_engine
    from stepedit_core.foundation.edits import parse_chain
    from stepedit_core.foundation.stages import WorkItem
    from stepedit_core.lifecycle.rounds import RoundEnd, build_stages

    try:  # a tree with typed stage data builds items from a clip spec
        from stepedit_core.foundation.clip_spec import ClipSpec

        item = WorkItem(ClipSpec(0, "chapter", args.chapter, parse_chain(EDIT)))
    except ImportError:
        item = WorkItem(0, "chapter", args.chapter, parse_chain(EDIT))
    if hasattr(item, "audio_dir"):  # the tree publishes round audio into a store
        item.audio_dir = str(out / "payload-objects")
    sizes = []
    for stage in build_stages(make_engine("signal"), args.rounds, with_clone_round=False):
        if stage.needs_actor:
            stage.setup()
        (item,) = stage.process_batch([item])
        if isinstance(stage, RoundEnd):
            sizes.append(len(pickle.dumps(item)))
    if item.failed:
        raise RuntimeError(f"payload run failed: {item.error}")
    return sizes


# --- the driver -----------------------------------------------------------------------------


def tree_rss(pid: int) -> dict[int, tuple[str, int]]:
    import psutil

    found: dict[int, tuple[str, int]] = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for proc in procs:
        try:
            name = " ".join(proc.cmdline()[:3])[-80:] or proc.name()
            found[proc.pid] = (name, proc.memory_info().rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def measure(src: Path, executor: str, chapter: str, workdir: str, rounds: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{src}:{ROOT / 'tests'}", RAY_ACCEPT_ONNX_IN_WORKERS="1",
               RAY_AUTH_MODE="disabled")  # fmt: skip
    env.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--executor", executor,
           "--chapter", chapter, "--workdir", workdir, "--rounds", str(rounds)]  # fmt: skip
    peaks: dict[int, tuple[str, int]] = {}
    with subprocess.Popen(cmd, env=env, cwd=workdir, stdout=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None:
            for pid, (name, rss) in tree_rss(proc.pid).items():
                if rss > peaks.get(pid, ("", 0))[1]:
                    peaks[pid] = (name, rss)
            time.sleep(0.1)
        output = proc.stdout.read() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{executor} run under {src} failed ({proc.returncode})")
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    ranked = sorted(peaks.values(), key=lambda p: -p[1])
    result["peak_rss_mb_largest_process"] = round(ranked[0][1] / 2**20)
    result["peak_rss_mb_by_process"] = [
        {"process": name, "peak_rss_mb": round(rss / 2**20)} for name, rss in ranked[:8]
    ]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", default="main", help="git revision of the 'before' code")
    parser.add_argument("--executors", default="local,ray")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--executor", help=argparse.SUPPRESS)
    parser.add_argument("--chapter", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.minutes > 20:
        parser.error("keep --minutes at 20 or under: the old code's memory grows with it")
    sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]
    import soundfile as sf
    from mastering import RATE, chapter

    from machine import export, machine_info, write_result

    load_start = list(os.getloadavg())
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        audio = base / "chapter.flac"
        sf.write(audio, chapter(args.minutes), RATE, subtype="PCM_24")
        trees = {"before": export(args.before, base / "before-src"), "after": ROOT}
        for label, src in trees.items():
            for executor in args.executors.split(","):
                workdir = base / f"{label}-{executor}"
                workdir.mkdir()
                print(f"{label} / {executor} ...", flush=True)
                runs[f"{label}/{executor}"] = measure(
                    src, executor, str(audio), str(workdir), args.rounds
                )
                print(json.dumps(runs[f"{label}/{executor}"])[:300], flush=True)
    payload = {
        "benchmark": "round_payload",
        "chapter": {"minutes": args.minutes, "sample_rate": RATE, "channels": 1},
        "edit": EDIT,
        "rounds": args.rounds,
        "before_revision": args.before,
        "float32_chapter_mb": round(args.minutes * 60 * RATE * 4 / 2**20, 1),
        "runs": runs,
        "note": "shared 2-core machine under load from other work: wall times are indicative; "
        "peak RSS sampled every 0.1 s over the run's process tree; on the local executor the "
        "one process also runs the item-size pass after the run (its peak covers both)",
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "machine": machine_info(),
    }
    write_result(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
