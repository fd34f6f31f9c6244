"""Incremental runs: how long the plan-time lookup of earlier results takes.

Builds a synthetic output root holding `--runs` earlier runs that finished `--clips` clips in
all (their `_index/finished/<run>.parquet` and `_index/sources/<run>.parquet` files and a
run.json each; no audio), then times, for a new run over the same clips:

- reading the finished index (the union of the per-run files) and the source-hash cache;
- deciding every row (finished key + lookup) with the source hashes already known, half the
  rows found and half new;
- separately, what knowing a source hash costs per file on local disk: an `info()` when size
  and mtime match an earlier hash, a full read otherwise (`--files` small WAV-sized files).

Run: `python benchmarks/incremental_lookup.py --clips 100000 --runs 50`.
Writes benchmarks/results/incremental_lookup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from stepedit_core.catalog.manifest import clip_seed
from stepedit_core.catalog.records import PlanRow
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.lifecycle.incremental import (
    FINISHED_SCHEMA,
    SOURCES_SCHEMA,
    OutIndex,
    Reuse,
    SourceHasher,
    SourceStamp,
    finished_key,
    key_settings,
)
from stepedit_core.lifecycle.job import JobSpec

from machine import machine_info, write_result

RESULTS = Path(__file__).parent / "results"
EDIT = parse_chain("loudness=-20")


def _plan_row(i: int, root: str) -> PlanRow:
    clip_id = f"clip-{i:07d}"
    return PlanRow(
        row_index=i,
        clip_id=clip_id,
        audio_uri=f"{root}/audio/{clip_id}.wav",
        edits=EDIT,
        text=None,
        target_text=None,
        language=None,
        speaker=None,
        seed=clip_seed(clip_id, 0),
    )


def _source_sha(i: int) -> str:
    return f"{i:064x}"


def build(out: str, clips: int, runs: int, job: JobSpec) -> list[PlanRow]:
    engine = job.make_engine()
    index = OutIndex(out)
    settings = key_settings(job, engine)
    rows = [_plan_row(i, out) for i in range(clips)]
    per_run = -(-clips // runs)
    for r in range(runs):
        run_id = f"earlier-{r:03d}"
        chunk = rows[r * per_run : (r + 1) * per_run]
        finished = [
            {
                "key": finished_key(_source_sha(p.row_index), p, settings),
                "clip_id": p.clip_id,
                "output_uri": f"{out}/{run_id}/audio/{p.row_index:08d}-{p.clip_id}.flac",
                "run_id": run_id,
                "iterations_done": 1,
            }
            for p in chunk
        ]
        sources = [
            {"audio_uri": p.audio_uri, "size": 40_000, "stamp": "1.0", "sha256": _source_sha(i)}
            for i, p in enumerate(chunk, start=r * per_run)
        ]
        index.write(index.finished_path(run_id), pa.Table.from_pylist(finished, FINISHED_SCHEMA))
        index.write(index.sources_path(run_id), pa.Table.from_pylist(sources, SOURCES_SCHEMA))
        os.makedirs(f"{out}/{run_id}", exist_ok=True)
        Path(f"{out}/{run_id}/run.json").write_text("{}\n")
    return rows


def time_lookup(out: str, clips: int, runs: int) -> dict:
    job = JobSpec(manifest_uri="m", out=out, run_id="new", edits=("loudness=-20",))
    rows = build(out, clips, runs, job)
    engine = job.make_engine()
    # the new catalog: the earlier clips with every other one changed (new bytes)
    changed = {p.row_index for p in rows if p.row_index % 2}

    t0 = time.perf_counter()
    finished = OutIndex(out).finished("new")
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    reuse = Reuse(job, engine)
    t_reuse_init = time.perf_counter() - t0
    # source hashes known (as after `info()`): this isolates the lookup itself
    for p in rows:
        sha = _source_sha(p.row_index) + ("x" if p.row_index in changed else "")
        reuse.hasher.seen[p.audio_uri] = SourceStamp(p.audio_uri, 40_000, "1.0", sha)
    t0 = time.perf_counter()
    found = 0
    for start in range(0, len(rows), 1024):
        _, reused, _ = reuse.split(rows[start : start + 1024])
        found += len(reused)
    t_split = time.perf_counter() - t0
    assert found == clips - len(changed), (found, clips, len(changed))
    return {
        "earlier_clips": clips,
        "earlier_runs": runs,
        "index_rows_read": finished.num_rows,
        "read_finished_index_s": round(t_index, 4),
        "read_index_and_source_cache_s": round(t_reuse_init, 4),
        "decide_all_rows_s": round(t_split, 4),
        "rows_reused": found,
        "rows_to_edit": len(changed),
        "total_lookup_s": round(t_reuse_init + t_split, 4),
    }


def time_source_hashes(root: Path, files: int, size: int) -> dict:
    folder = root / "sources"
    folder.mkdir()
    uris = []
    payload = os.urandom(size)
    for i in range(files):
        path = folder / f"s{i:06d}.wav"
        path.write_bytes(payload[:-8] + i.to_bytes(8, "little"))
        uris.append(str(path))
    first = SourceHasher({})
    t0 = time.perf_counter()
    first.hash_all(uris)
    t_read = time.perf_counter() - t0
    known = {(s.audio_uri, s.size, s.stamp): s.sha256 for s in first.seen.values()}
    again = SourceHasher(known)
    t0 = time.perf_counter()
    again.hash_all(uris)
    t_info = time.perf_counter() - t0
    assert again.reused == files and again.hashed == 0
    return {
        "files": files,
        "file_bytes": size,
        "hash_by_reading_s": round(t_read, 4),
        "hash_reused_by_info_s": round(t_info, 4),
        "per_file_read_ms": round(1000 * t_read / files, 4),
        "per_file_info_ms": round(1000 * t_info / files, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--file-bytes", type=int, default=480_000)  # 10 s of 24 kHz 16-bit
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lookup = time_lookup(str(Path(tmp) / "out"), args.clips, args.runs)
        sources = time_source_hashes(Path(tmp), args.files, args.file_bytes)
    result = {
        "benchmark": "incremental_lookup",
        "lookup": lookup,
        "source_hashes_local_disk": sources,
        "machine": machine_info(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # a shared machine
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "incremental_lookup.json"
    write_result(path, result)
    print(json.dumps({"lookup": lookup, "source_hashes_local_disk": sources}, indent=2))


if __name__ == "__main__":
    main()
