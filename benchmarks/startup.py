"""What a one-clip `stepedit run` spends before and around its clip.

Each piece is measured in a fresh interpreter, `--repeat` times (medians are reported):

- `python`: an empty interpreter start;
- `import prefect, ray, torch`: the libraries a run needs, the floor for any run;
- `import stepedit cli`: what `stepedit` imports before it parses its arguments;
- `prefect temporary server`: `start_temporary_server()` (after its imports), with a Prefect
  home whose database exists (`warm`) and with a fresh one (`fresh`, built on first start);
- `ray init`: `ensure_ray()` starting a local Ray (after its imports);
- `run local` / `run ray`: `stepedit run` on one 1 s clip (`speed=faster`), command to exit,
  each in a new run folder;
- `run local, server reused` / `run ray, server reused`: the same while `stepedit server start`
  keeps a local Prefect server up (started once by this script), so no temporary server starts.

    python benchmarks/startup.py [--repeat 3]

Writes benchmarks/results/startup.json. The machine is shared: its load average before and after
is recorded, and the numbers are only comparable with each other.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

from machine import machine_info

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
RATE = 24000

# a piece timed inside the child, after its imports; prints the seconds as JSON
SERVER = """
import json, time
from stepedit_flows.prefect_server import start_temporary_server
started = time.perf_counter()
assert start_temporary_server()
print(json.dumps(time.perf_counter() - started))
"""
RAY = """
import json, time
import ray
from stepedit_core.executors.ray_data import ensure_ray
started = time.perf_counter()
ensure_ray()
seconds = time.perf_counter() - started
ray.shutdown()
print(json.dumps(seconds))
"""


def base_env(prefect_home: Path) -> dict[str, str]:
    """A user's environment: no Prefect settings but a home of the benchmark's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_ADDRESS"))}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        RAY_ACCEPT_ONNX_IN_WORKERS="1",
    )
    return env


def wall(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Seconds from start to exit of `command` (which must succeed), and its stdout."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def inner(code: str, env: dict[str, str]) -> float:
    """The seconds a child measured itself (last line of its stdout)."""
    _, out = wall([sys.executable, "-c", code], env)
    return float(out.strip().splitlines()[-1])


def one_clip_catalog(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(RATE) / RATE
    sf.write(folder / "c0.wav", (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), RATE)
    manifest = folder / "m.parquet"
    pq.write_table(pa.table({"clip_id": ["c0"], "audio_uri": [str(folder / "c0.wav")]}), manifest)
    return str(manifest)


def run_command(manifest: str, out: Path, run_id: str, executor: str) -> list[str]:
    return [
        sys.executable, "-m", "stepedit_flows.cli", "run", manifest, "--out", str(out),
        "--run-id", run_id, "--edit", "speed=faster", "--executor", executor, "--quiet",
        "--report", "none",
    ]  # fmt: skip


@contextlib.contextmanager
def local_server(env: dict[str, str]) -> Iterator[None]:
    """`stepedit server start` for the Prefect home in `env` until the block ends."""
    wall([sys.executable, "-m", "stepedit_flows.cli", "server", "start"], env)
    try:
        yield
    finally:
        wall([sys.executable, "-m", "stepedit_flows.cli", "server", "stop"], env)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    samples: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds)
        print(f"{name}: {seconds:.2f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="stepedit-startup-") as tmp:
        tmp_path = Path(tmp)
        home = tmp_path / "prefect-home"
        env = base_env(home)
        manifest = one_clip_catalog(tmp_path / "catalog")
        # warm the page cache and Prefect's database once, unmeasured
        wall([sys.executable, "-c", "import prefect, ray, torch"], env)
        inner(SERVER, env)
        for i in range(args.repeat):
            record("python", wall([sys.executable, "-c", "pass"], env)[0])
            record(
                "import prefect, ray, torch",
                wall([sys.executable, "-c", "import prefect, ray, torch"], env)[0],
            )
            record(
                "import stepedit cli",
                wall([sys.executable, "-c", "import stepedit_flows.cli"], env)[0],
            )
            record("prefect temporary server (warm)", inner(SERVER, env))
            record(
                "prefect temporary server (fresh home)",
                inner(SERVER, base_env(tmp_path / f"fresh-home-{i}")),
            )
            record("ray init", inner(RAY, env))
            for executor in ("local", "ray"):
                command = run_command(manifest, tmp_path / "runs", f"{executor}-{i}", executor)
                record(f"run {executor}", wall(command, env)[0])
        with local_server(env):
            for i in range(args.repeat):
                for executor in ("local", "ray"):
                    run_id = f"reused-{executor}-{i}"
                    command = run_command(manifest, tmp_path / "runs", run_id, executor)
                    record(f"run {executor}, server reused", wall(command, env)[0])

    seconds = {name: median(values) for name, values in samples.items()}
    floor = seconds["import prefect, ray, torch"]
    result = {
        "what": "one-clip `stepedit run` (speed=faster, 1 s clip) and its pieces, medians",
        "repeat": args.repeat,
        "seconds": seconds,
        "samples": {name: [round(v, 2) for v in values] for name, values in samples.items()},
        "ratios_to_imports": {
            name: round(seconds[name] / floor, 2)
            for name in (
                "run local",
                "run ray",
                "run local, server reused",
                "run ray, server reused",
            )
        },
        "ray_minus_local_s": round(seconds["run ray"] - seconds["run local"], 2),
        "ray_minus_local_server_reused_s": round(
            seconds["run ray, server reused"] - seconds["run local, server reused"], 2
        ),
        "note": "shared machine, other jobs running: load average before/after recorded",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "startup.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("seconds", "ratios_to_imports")}, indent=2))


if __name__ == "__main__":
    main()
