"""Peak memory and time of a whole chapter's ACX path, in blocks: mastering (`loudness=acx`),
QC of the mastered file (speech spans handed on from mastering, not found again) and MP3
delivery (192 kbps CBR, decoded peak trimmed under ACX's -3 dBFS) with QC of the MP3.

Each chapter length runs in a fresh process (peak resident memory, `ru_maxrss`, is per
process), pinned to one core with one torch thread. The chapter is benchmarks/mastering.py's
synthetic narration (a narration tile, 26 dB crest factor, -50 dB room tone, a -4..+4 dB drift
over the chapter), 44.1 kHz mono, written to FLAC a block at a time (never whole in memory).

Component level (file -> file, default): `python benchmarks/chapter_memory.py --minutes 30 60 120`
End to end through `stepedit run` (`--edit loudness=acx --qc acx --deliver-format mp3`):
`--e2e local` or `--e2e ray` (needs round audio by reference in the run machinery; without it
the run holds the chapter in memory, so it is never started for chapters over 20 minutes
unless --force is given).
-> benchmarks/results/chapter_memory.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must be set before numpy loads
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

from mastering import RATE, TILE_S  # noqa: E402

from machine import machine_info, one_core, write_result  # noqa: E402
from signal_fixtures import narration  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "chapter_memory.json"
OLD_CODE_LIMIT_MIN = 20.0  # the in-memory path needs ~13x the chapter's float32 size
BLOCK_S = 10.0  # chapter writing only


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def cpu_s() -> float:
    """CPU seconds of this process: on a loaded machine wall time also counts waiting."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ProcessPeaks:
    """Peak resident memory of every process this one starts (Ray's raylet, workers, ...):
    each one's own high-water mark (`VmHWM`), read every `every_s` while it lives, so a
    process's peak is exact up to the last reading before it exits."""

    def __init__(self, every_s: float = 0.5) -> None:
        import threading

        self.every_s = every_s
        self.peaks: dict[int, tuple[str, float]] = {}
        self.cpu: dict[int, float] = {}  # CPU seconds at the last reading
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ProcessPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self._read()

    def _read(self) -> None:
        import psutil

        for child in psutil.Process().children(recursive=True):
            try:
                name = " ".join(child.cmdline())[:80] or child.name()
                status = Path(f"/proc/{child.pid}/status").read_text()
                times = child.cpu_times()
                self.cpu[child.pid] = times.user + times.system
            except (psutil.Error, OSError):
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    mb = round(int(line.split()[1]) / 1024, 1)
                    if mb >= self.peaks.get(child.pid, ("", 0.0))[1]:
                        self.peaks[child.pid] = (_role(name), mb)

    def summary(self) -> dict:
        rows = sorted(self.peaks.values(), key=lambda r: -r[1])
        return {
            "processes": len(rows),
            "max_peak_rss_mb": max((mb for _, mb in rows), default=0.0),
            "cpu_s": round(sum(self.cpu.values()), 1),  # up to each one's last reading
            "peak_rss_mb_by_process": [{"process": n, "peak_rss_mb": mb} for n, mb in rows],
        }


def _role(cmdline: str) -> str:
    """A short, stable name for a process (Ray names its workers `ray::<actor or task>`)."""
    if cmdline.startswith("ray::"):
        return cmdline.split()[0]
    for known in ("raylet", "gcs_server", "dashboard", "log_monitor", "runtime_env"):
        if known in cmdline:
            return known
    return cmdline.split("/")[-1][:60]


def write_chapter(path: Path, minutes: float) -> None:
    """benchmarks/mastering.py's `chapter`, made and written a block at a time."""
    from stepedit_core.signal.blocks import BlockWriter

    tile = narration(TILE_S, RATE, drift_db=0.0, crest_db=26.0, seed=7)[:, 0]
    frames = round(minutes * 60 * RATE)
    scale = 0.9 / (float(np.abs(tile).max()) * 10 ** (4.0 / 20))  # the loudest end's peak
    step = round(BLOCK_S * RATE)
    with BlockWriter(path, RATE, 1) as writer:
        for start in range(0, frames, step):
            at = np.arange(start, min(frames, start + step))
            drift = 10 ** ((8.0 * at / max(1, frames - 1) - 4.0) / 20)  # -4 dB rising to +4 dB
            writer.write((tile[at % tile.shape[0]] * drift * scale)[:, None].astype(np.float32))


def one_chapter(minutes: float) -> dict:
    """Runs in its own process: the component path, file -> file."""
    from stepedit_core.engines.signal.master_blocks import master_file
    from stepedit_core.quality import qc
    from stepedit_core.quality.delivery import PROFILES, check
    from stepedit_core.quality.encoding import DeliverFormat, encode_file
    from stepedit_core.signal.vad import shared_vad

    one_core()
    shared_vad()  # model load is start-up, not per chapter
    steps: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "chapter.flac"
        write_chapter(source, minutes)
        steps["write_chapter"] = {"peak_rss_mb": peak_rss_mb()}

        def step(name: str, func):
            start, cpu = time.perf_counter(), cpu_s()
            value = func()
            wall = time.perf_counter() - start
            steps[name] = {
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu_s() - cpu, 1),
                "peak_rss_mb": peak_rss_mb(),
            }
            return value

        acx = PROFILES["acx"]
        mastered = step(
            "master_acx", lambda: master_file(source, folder / "mastered.flac", "acx", acx)
        )
        report = step("qc_mastered", lambda: qc.measure_file(mastered.path, spans=mastered.spans))
        mp3 = DeliverFormat("mp3", 192, mono=True)
        encoded = step(
            "encode_mp3",
            lambda: encode_file(
                mastered.path, folder / "chapter.mp3", mp3, acx.sample_peak_max_dbfs
            ),
        )
        delivered = step("qc_mp3", lambda: qc.measure_file(encoded.path, spans=mastered.spans))
    seconds = minutes * 60
    work = sum(s.get("wall_s", 0.0) for s in steps.values())
    cpu = sum(s.get("cpu_s", 0.0) for s in steps.values())
    kept = ("rms_dbfs", "peak_dbfs", "true_peak_dbtp", "noise_floor_db", "head_silence_s",
            "tail_silence_s", "duration_s")  # fmt: skip
    return {
        "minutes": minutes,
        "steps": steps,
        "wall_s": round(work, 1),
        "cpu_s": round(cpu, 1),
        "x_real_time_wall": round(seconds / work, 1),
        "x_real_time_per_cpu_second": round(seconds / cpu, 1),
        "peak_rss_mb": peak_rss_mb(),
        "mastered_acx_pass": check(report.metrics, "acx").passed,
        "mp3": {
            "trim_db": round(encoded.trim_db, 2),
            **{k: delivered.metrics.get(k) for k in kept},
            "acx_pass": check(delivered.metrics, "acx").passed,
            "acx_reasons": check(delivered.metrics, "acx").reasons,
        },
    }


def e2e_chapter(minutes: float, executor: str) -> dict:
    """`stepedit run` on a one-row manifest, in this process (local) or on local Ray."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stepedit_core.lifecycle.job import JobSpec
    from stepedit_core.lifecycle.run import run_job

    one_core()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_chapter(folder / "chapter.flac", minutes)
        manifest = folder / "book.parquet"
        pq.write_table(
            pa.table({"clip_id": ["chapter"], "audio_uri": [str(folder / "chapter.flac")]}),
            manifest,
        )
        job = JobSpec(
            manifest_uri=str(manifest),
            out=str(folder / "runs"),
            run_id="book",
            edits=["loudness=acx"],
            executor=executor,
            qc="acx",
            deliver_format="mp3",
            report="none",
        )
        start, cpu = time.perf_counter(), cpu_s()
        with ProcessPeaks() as others:
            if executor == "local":
                from stepedit_core.executors.local import LocalExecutor

                run_job(job, executor=LocalExecutor())
            else:
                run_job(job)
        wall = time.perf_counter() - start
        (row,) = pq.read_table(folder / "runs" / "book" / "manifest.parquet").to_pylist()
    return {
        "minutes": minutes,
        "executor": executor,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu_s() - cpu, 1),
        "x_real_time": round(minutes * 60 / wall, 1),
        "peak_rss_mb": peak_rss_mb(),
        "note": "peak_rss_mb: the driver's own peak; other_processes: every process it started "
        "(Ray's workers, raylet, ...), each one's high-water mark; max_peak_rss_mb: the "
        "largest of all; cpu_s: the driver's CPU, other_processes.cpu_s: theirs",
        "other_processes": others.summary(),
        "max_peak_rss_mb": max(peak_rss_mb(), others.summary()["max_peak_rss_mb"]),
        "row": {k: row[k] for k in ("status", "qc_status", "qc_reasons", "output_uri")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[30.0, 60.0, 120.0])
    parser.add_argument("--e2e", choices=("local", "ray"))
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:  # one length, one process: print its result
        (minutes,) = args.minutes
        result = e2e_chapter(minutes, args.e2e) if args.e2e else one_chapter(minutes)
        print(json.dumps(result))
        return 0
    if args.e2e and max(args.minutes) > OLD_CODE_LIMIT_MIN and not args.force:
        parser.error(
            f"end-to-end runs over {OLD_CODE_LIMIT_MIN:g} minutes need round audio by reference "
            "in the run machinery (or --force): the in-memory path needs 7-15 GB"
        )
    load_start = list(os.getloadavg())
    runs = []
    for minutes in args.minutes:
        command = [sys.executable, __file__, "--child", "--minutes", str(minutes)]
        if args.e2e:
            command += ["--e2e", args.e2e]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        shown = ("minutes", "wall_s", "cpu_s", "peak_rss_mb", "max_peak_rss_mb")
        print(json.dumps({k: runs[-1].get(k) for k in shown}), flush=True)
    out = {
        "benchmark": "chapter_memory",
        "variant": f"e2e-{args.e2e}" if args.e2e else "component (file -> file, in blocks)",
        "note": "one process per chapter, pinned to one core, on a shared 2-core machine under "
        "load from other jobs (load averages below): wall times include waiting for the core, "
        "so x_real_time_per_cpu_second (audio seconds per CPU second) is the per-core speed",
        "load_average_1_5_15": {"start": load_start, "end": list(os.getloadavg())},
        "runs": runs,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    previous[out["variant"]] = out
    write_result(args.out, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
