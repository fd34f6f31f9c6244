"""`stepedit audit` on a large run: how long one clip's history takes, against a full scan.

Builds a synthetic run folder the way the executor lays it out (shards of 2000 clips, part
files of 256 sealed round records, a few bytes of audio per record so the run stays small on
disk), writes the records index as the run writer does, then times `clip_history` for random
clips and a pyarrow scan of all part files for the same clip. Also times `verify_run` (a full
pass) on a smaller synthetic run with its delivered files and sealed run.json.
Run: `python benchmarks/audit_history.py --clips 100000 --rounds 2`.
Writes benchmarks/results/audit_history.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from stepedit_core.audit import clip_history, run_audit, verify_run, write_sealed_run_json
from stepedit_core.engines import round_record_schema
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.shard import RECORDS_PER_PART

from machine import machine_info, write_result

RESULTS = Path(__file__).parent / "results"
SHARD_CLIPS = 2000


def _record(clip: int, iteration: int, input_sha: str, prev: str) -> dict:
    from stepedit_core.audit import seal

    flac = f"fLaC-{clip}-{iteration}".encode()
    return seal(
        {
            "clip_id": f"clip-{clip:06d}",
            "row_index": clip,
            "iteration": iteration,
            "edit": "loudness=-23",
            "key": hashlib.sha256(f"{clip}:{iteration}".encode()).hexdigest(),
            "input_sha256": input_sha,
            "output_sha256": hashlib.sha256(flac).hexdigest(),
            "status": "ok",
            "engine": "signal",
            "engine_version": "1",
            "seed": clip,
            "timings_json": "{}",
            "duration_s": 3.2,
            "peak_dbfs": -3.1,
            "rms_dbfs": -20.0 - (clip % 7) * 0.1,
            "clipped_samples": 0,
            "audio_flac": flac,
        },
        prev,
    )


def make_run(out: Path, clips: int, rounds: int, delivered: bool = False) -> RunStore:
    store = RunStore(str(out), "big")
    manifest_rows = []
    for shard_start in range(0, clips, SHARD_CLIPS):
        shard = shard_start // SHARD_CLIPS
        records: list[dict] = []
        parts = 0
        for clip in range(shard_start, min(clips, shard_start + SHARD_CLIPS)):
            source = hashlib.sha256(f"source-{clip}".encode()).hexdigest()
            input_sha, prev = source, source
            for k in range(1, rounds + 1):
                record = _record(clip, k, input_sha, prev)
                records.append(record)
                input_sha, prev = record["output_sha256"], record["record_sha256"]
            if delivered:  # the last round's bytes, as the executor writes them
                store.write_bytes(store.audio_path(f"clip-{clip:06d}", clip), record["audio_flac"])
            manifest_rows.append(
                {
                    "clip_id": f"clip-{clip:06d}",
                    "audio_uri": f"s3://catalog/clip-{clip:06d}.wav",
                    "status": "ok",
                    "output_uri": None,
                    "error": None,
                    "error_code": None,
                    "iterations_done": rounds,
                }
            )
            while len(records) >= RECORDS_PER_PART:
                table = pa.Table.from_pylist(records[:RECORDS_PER_PART], round_record_schema())
                store.write_table(store.iteration_part(shard, parts), table)
                records, parts = records[RECORDS_PER_PART:], parts + 1
        if records:
            store.write_table(
                store.iteration_part(shard, parts),
                pa.Table.from_pylist(records, round_record_schema()),
            )
    sink = pa.BufferOutputStream()
    writer = pq.ParquetWriter(sink, pa.Table.from_pylist(manifest_rows[:1]).schema)
    for start in range(0, len(manifest_rows), 8192):  # row groups as merge_output writes them
        writer.write_table(pa.Table.from_pylist(manifest_rows[start : start + 8192]))
    writer.close()
    store.write_bytes(store.manifest, sink.getvalue().to_pybytes())
    return store


def full_scan(store: RunStore, clip_id: str) -> int:
    columns = [n for n in round_record_schema().names if n != "audio_flac"]
    dataset = ds.dataset(store.iterations_dir, format="parquet")
    return dataset.to_table(columns=columns, filter=ds.field("clip_id") == clip_id).num_rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lookups", type=int, default=30)
    parser.add_argument("--verify-clips", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = make_run(Path(tmp), args.clips, args.rounds)
        build_s = time.perf_counter() - t0
        parts = len(store.list(store.iterations_dir))
        t0 = time.perf_counter()
        audit = run_audit(store, "0" * 64)
        index_s = time.perf_counter() - t0
        rng = random.Random(0)
        picks = [f"clip-{rng.randrange(args.clips):06d}" for _ in range(args.lookups)]
        times = []
        for clip_id in picks:
            t0 = time.perf_counter()
            history = clip_history(str(tmp), "big", clip_id)
            times.append(time.perf_counter() - t0)
            assert history is not None and len(history["rounds"]) == args.rounds
            assert all(r["record_ok"] and r["links_ok"] for r in history["rounds"])
        scans = []
        for clip_id in picks[:3]:
            t0 = time.perf_counter()
            assert full_scan(store, clip_id) == args.rounds
            scans.append(time.perf_counter() - t0)
        index_bytes = Path(store.path(audit["index"])).stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        # verify: a full pass, so a smaller run with every delivered file and a sealed run.json
        store = make_run(Path(tmp), args.verify_clips, args.rounds, delivered=True)
        record = {"run_id": "big", "input_manifest": {"sha256": "0" * 64}}
        record["audit"] = run_audit(store, "0" * 64)
        write_sealed_run_json(store, record)
        t0 = time.perf_counter()
        report = verify_run(str(tmp), "big")
        verify_s = time.perf_counter() - t0
        assert report.intact, report.text()[:2000]
    result = {
        "benchmark": "audit_history",
        "clips": args.clips,
        "rounds": args.rounds,
        "records": audit["records"],
        "part_files": parts,
        "synthetic_run_build_s": round(build_s, 2),
        "index_build_s": round(index_s, 2),
        "index_bytes": index_bytes,
        "clip_history_s": {
            "first": round(times[0], 4),
            "median": round(statistics.median(times), 4),
            "max": round(max(times), 4),
            "lookups": len(times),
        },
        "full_scan_s": {"median": round(statistics.median(scans), 3), "lookups": len(scans)},
        "verify": {
            "clips": args.verify_clips,
            "records": report.checked["records"],
            "seconds": round(verify_s, 2),
            "records_per_s": round(report.checked["records"] / verify_s),
        },
        "note": "local disk; clip_history reads one index row group, one manifest row group "
        "and one part row group (audio column skipped)",
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_result(RESULTS / "audit_history.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
