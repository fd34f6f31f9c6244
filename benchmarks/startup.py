"""What a one-clip `stepedit run` spends before and around its clip, this checkout against an
earlier one ("before"), side by side in one benchmark run on one machine.

Each piece is measured in a fresh interpreter, `--repeat` times (medians are reported):

- `python`: an empty interpreter start;
- `import prefect, ray, torch`: the libraries a run needs, the floor for any run;
- `import stepedit cli`: what `stepedit` imports before it parses its arguments;
- `prefect temporary server`: `start_temporary_server()` (after its imports), with a Prefect
  home whose database exists (`warm`) and with a fresh one (`fresh`, built on first start);
- `local server start`: `stepedit server start` until it answers, then `stepedit server stop`,
  on a warm home (what the first run after an idle stop waits for, at most);
- `ray init`: `ensure_ray()` starting a local Ray (after its imports);
- `run local` / `run ray`: `stepedit run` on one 1 s clip (`speed=faster`), command to exit,
  each in a new run folder. Before: every run starts Prefect's temporary server. After: runs
  reuse the local server the first run started (`run local, first` is that first run, on a
  fresh Prefect home), and `run local, temporary server` is the same run with
  STEPEDIT_PREFECT_SERVER=temporary (what the other changes save without the local server).
  After, runs on the Ray executor join the shared local Ray cluster the warm-up run started
  (`run ray, temporary ray (after)`: with STEPEDIT_RAY=temporary, a Ray of the run's own).

`phases` breaks one reused-server local and Ray run of this checkout into its steps (seconds
since the command started; the run's functions are wrapped to note the time). A local run sets
its engine up in a background thread: `setup wait` is how long the run then waited for it.

`imports beyond the floor` are what a run imports beyond Prefect (it imports no torch, and on
the local executor no Ray): each is timed in a fresh interpreter that has imported prefect
(and, for the flow, the command line) already.

    python benchmarks/startup.py [--repeat 3] [--before GIT_REV] [--output NAME.json] [--local-only]

`--local-only` times only the floor and the reused-server local run, before and after (and the
local run's phases): fewer pieces, so more repeats fit, for a machine whose load swings.

`--before` (default: the merge base with main) is exported with `git archive` into a temporary
folder and imported from there. Writes benchmarks/results/startup.json (or `--output`). The
machine is shared: its load average before and after is recorded, and the numbers are only
comparable with each other.
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

from machine import export, machine_info, write_result

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
RATE = 24000
# package name -> its folder in a checkout (pyproject.toml's package-dir)
PACKAGES = {"stepedit_core": "stepedit_core", "stepedit_flows": "flows", "stepedit_tasks": "tasks"}

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
# one import timed after others (argv: the module, then those imported before it)
EXTRA_IMPORT = """
import importlib, json, sys, time
for name in sys.argv[2:]:
    importlib.import_module(name)
started = time.perf_counter()
importlib.import_module(sys.argv[1])
print(json.dumps(time.perf_counter() - started))
"""
# what a run imports beyond Prefect (a run imports neither torch nor, on the local executor, Ray):
# module -> what is imported before it
BEYOND_FLOOR = {
    "stepedit_flows.cli": ("prefect",),
    "stepedit_flows.edit_catalog": ("prefect", "stepedit_flows.cli"),
    "pandas": ("prefect",),
    "onnxruntime": ("prefect",),
    "pyrnnoise": ("prefect",),
}
# a run of this checkout with its steps' times noted (seconds since `T0`, the command's start)
PHASES = """
import json, os, sys, time
T0 = float(os.environ["T0"])
marks = {}
def note(name):
    marks.setdefault(name, round(time.time() - T0, 2))
def wrap(module, name, before, after):
    real = getattr(module, name)
    def wrapped(*args, **kwargs):
        note(before)
        try:
            return real(*args, **kwargs)
        finally:
            note(after)
    setattr(module, name, wrapped)
note("interpreter started")
import stepedit_flows.cli as cli
note("command line imported")
import stepedit_core.lifecycle.run as run
import stepedit_flows.run_command as command
import stepedit_core.executors.ray_data as ray_data
import stepedit_core.lifecycle.shard as shard
import stepedit_core.engines.signal.engine as engine
import stepedit_core.executors.local as local
wrap(cli, "check_before_run", "checks start", "checks done")
if hasattr(local.LocalExecutor, "wait_prepared"):  # the engine set up in the background
    wrap(local.LocalExecutor, "wait_prepared", "setup wait start", "setup waited")
wrap(command.local_server, "wait_until_ready", "server wait start", "server ready")
wrap(run.RunSteps, "validate", "flow started (validate)", "validated")
wrap(run.RunSteps, "run_shards", "shards start", "shards done")
wrap(engine.SignalEditStage, "setup", "engine setup start", "engine setup done")
wrap(ray_data, "ensure_ray", "ray start", "ray ready")
wrap(run.RunSteps, "report", "last step", "flow body done")
status = cli.main(sys.argv[1:])
note("command done")
if hasattr(command, "stop_local_ray"):  # what `stepedit` does after its command (entry_point)
    command.stop_local_ray()
    note("ray stopped")
import atexit, gc
atexit.register(lambda: print(json.dumps(marks), file=sys.__stderr__, flush=True))
gc.freeze()
sys.exit(status)
"""


def base_env(prefect_home: Path, packages: Path | None = None) -> dict[str, str]:
    """A user's environment: no Prefect settings but a home of the benchmark's own; with
    `packages`, stepedit is imported from that folder (an earlier checkout)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "RAY_ADDRESS", "STEPEDIT_", "PYTHONPATH"))
    }
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        RAY_ACCEPT_ONNX_IN_WORKERS="1",
    )
    if packages is not None:
        env["PYTHONPATH"] = str(packages)
    return env


def wall(command: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    """Seconds from start to exit of `command` (which must succeed), its stdout and stderr. It
    runs in a neutral folder: from the checkout, `python -c` would import its stepedit_core
    before the one on PYTHONPATH."""
    started = time.perf_counter()
    done = subprocess.run(
        command, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, done.stdout, done.stderr


def inner(code: str, env: dict[str, str]) -> float:
    """The seconds a child measured itself (last line of its stdout)."""
    _, out, _ = wall([sys.executable, "-c", code], env)
    return float(out.strip().splitlines()[-1])


def inner_args(code: str, args: list[str], env: dict[str, str]) -> float:
    """`inner` with command-line arguments for the child."""
    _, out, _ = wall([sys.executable, "-c", code, *args], env)
    return float(out.strip().splitlines()[-1])


def one_clip_catalog(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(RATE) / RATE
    sf.write(folder / "c0.wav", (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), RATE)
    manifest = folder / "m.parquet"
    pq.write_table(pa.table({"clip_id": ["c0"], "audio_uri": [str(folder / "c0.wav")]}), manifest)
    return str(manifest)


def run_args(manifest: str, out: Path, run_id: str, executor: str) -> list[str]:
    return [
        "run", manifest, "--out", str(out), "--run-id", run_id, "--edit", "speed=faster",
        "--executor", executor, "--quiet", "--report", "none",
    ]  # fmt: skip


def stepedit(*args: str) -> list[str]:
    return [sys.executable, "-m", "stepedit_flows.cli", *args]


def export_checkout(rev: str, folder: Path) -> Path:
    """`rev` of this repository under `folder`; returns a folder to put on PYTHONPATH."""
    source = export(rev, folder / "checkout")
    packages = folder / "packages"
    packages.mkdir()
    for name, path in PACKAGES.items():
        (packages / name).symlink_to(source / path)
    return packages


@contextlib.contextmanager
def local_server(env: dict[str, str]) -> Iterator[None]:
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):
            wall(stepedit("server", "stop"), env)


STOP_SHARED_RAY = "from stepedit_flows import local_ray; local_ray.stop()"


@contextlib.contextmanager
def shared_ray(env: dict[str, str]) -> Iterator[None]:
    """Stops the shared local Ray cluster runs in `env` started (a checkout without one: no-op)."""
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):
            wall([sys.executable, "-c", STOP_SHARED_RAY], env)


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def phases(manifest: str, out: Path, run_id: str, executor: str, env: dict[str, str]) -> dict:
    started = time.time()
    _, _, err = wall(
        [sys.executable, "-c", PHASES, *run_args(manifest, out, run_id, executor)],
        {**env, "T0": repr(started)},
    )
    marks = json.loads(err.strip().splitlines()[-1])
    marks["process exited"] = round(time.time() - started, 2)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--before", default=None, help="git revision (default: merge base)")
    parser.add_argument("--output", default="startup.json", help="file under benchmarks/results")
    parser.add_argument(
        "--local-only", action="store_true", help="only the floor and the local run, before/after"
    )
    args = parser.parse_args()
    before_rev = (
        args.before
        or subprocess.run(
            ["git", "merge-base", "HEAD", "main"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    load_before = os.getloadavg()
    samples: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        samples.setdefault(name, []).append(seconds)
        print(f"{name}: {seconds:.2f} s", flush=True)

    with tempfile.TemporaryDirectory(prefix="stepedit-startup-") as tmp:
        tmp_path = Path(tmp)
        old_packages = export_checkout(before_rev, tmp_path / "before")
        manifest = one_clip_catalog(tmp_path / "catalog")
        runs = tmp_path / "runs"
        old = base_env(tmp_path / "home-before", old_packages)
        new = base_env(tmp_path / "home-after")
        temporary = base_env(tmp_path / "home-temporary")
        temporary["STEPEDIT_PREFECT_SERVER"] = "temporary"
        # warm the page cache and each Prefect home's database once, unmeasured; the first run
        # of `new` starts the local server the later runs reuse
        wall([sys.executable, "-c", "import prefect, ray, torch"], new)
        full = not args.local_only
        executors = ("local", "ray") if full else ("local",)
        if full:
            inner(SERVER, old)
            inner(SERVER, temporary)
        # an earlier checkout that also keeps a local server gets it stopped at the end
        temporary_ray = {**new, "STEPEDIT_RAY": "temporary"}
        with local_server(old), local_server(new), shared_ray(old), shared_ray(new):
            wall(stepedit(*run_args(manifest, runs, "warm-up", "local")), new)
            wall(stepedit(*run_args(manifest, runs, "warm-up-old", "local")), old)
            # starts the shared Ray cluster the later Ray runs of `new` join (and that of `old`,
            # when it has one)
            wall(stepedit(*run_args(manifest, runs, "warm-up-ray", "ray")), new)
            if full:
                wall(stepedit(*run_args(manifest, runs, "warm-up-ray-old", "ray")), old)
            ray_state = tmp_path / "home-after" / "stepedit-ray.json"
            shared_keeper = json.loads(ray_state.read_text())["pid"]
            for i in range(args.repeat):
                record("python", wall([sys.executable, "-c", "pass"], new)[0])
                record(
                    "import prefect, ray, torch",
                    wall([sys.executable, "-c", "import prefect, ray, torch"], new)[0],
                )
                for label, env in (("before", old), ("after", new)):
                    record(
                        f"import stepedit cli ({label})",
                        wall([sys.executable, "-c", "import stepedit_flows.cli"], env)[0],
                    )
                if full:
                    record("prefect temporary server (warm)", inner(SERVER, old))
                    record(
                        "prefect temporary server (fresh home)",
                        inner(SERVER, base_env(tmp_path / f"fresh-home-{i}")),
                    )
                    record("ray init", inner(RAY, new))
                    for module, before in BEYOND_FLOOR.items():
                        seconds = inner_args(EXTRA_IMPORT, [module, *before], new)
                        record(f"imports beyond the floor: {module}", seconds)
                for executor in executors:
                    command = stepedit(*run_args(manifest, runs, f"old-{executor}-{i}", executor))
                    record(f"run {executor} (before)", wall(command, old)[0])
                if full:
                    # the first run on a fresh home starts the local server (and stops it after)
                    fresh = base_env(tmp_path / f"first-home-{i}")
                    with local_server(fresh):
                        command = stepedit(*run_args(manifest, runs, f"first-{i}", "local"))
                        record("run local, first (after)", wall(command, fresh)[0])
                for executor in executors:
                    command = stepedit(*run_args(manifest, runs, f"new-{executor}-{i}", executor))
                    record(f"run {executor} (after)", wall(command, new)[0])
                if full:
                    command = stepedit(*run_args(manifest, runs, f"temporary-{i}", "local"))
                    record("run local, temporary server (after)", wall(command, temporary)[0])
                    command = stepedit(*run_args(manifest, runs, f"temporary-ray-{i}", "ray"))
                    record("run ray, temporary ray (after)", wall(command, temporary_ray)[0])
            state = json.loads((tmp_path / "home-after" / "stepedit-server.json").read_text())
            assert state["idle_stop_s"] > 0  # the runs started it themselves
            # every Ray run of `new` joined the cluster the warm-up started
            assert json.loads(ray_state.read_text())["pid"] == shared_keeper
            broken_down = {
                executor: phases(manifest, runs, f"phases-{executor}", executor, new)
                for executor in executors
            }
        warm_home = base_env(tmp_path / "home-after")
        for _ in range(args.repeat if full else 0):
            started = time.perf_counter()
            with local_server(warm_home):
                wall(stepedit("server", "start"), warm_home)
                record("local server start (warm home)", time.perf_counter() - started)

    seconds = {name: median(values) for name, values in samples.items()}
    floor = seconds["import prefect, ray, torch"]
    runs_compared = [
        name
        for name in (
            "run local (before)",
            "run ray (before)",
            "run local, first (after)",
            "run local (after)",
            "run ray (after)",
            "run local, temporary server (after)",
            "run ray, temporary ray (after)",
        )
        if name in seconds
    ]
    result = {
        "what": "one-clip `stepedit run` (speed=faster, 1 s clip) and its pieces, medians; "
        f"before = {before_rev[:12]}, after = this checkout",
        "repeat": args.repeat,
        "seconds": seconds,
        "ratios_to_imports": {name: round(seconds[name] / floor, 2) for name in runs_compared},
        "ray_minus_local_s": {
            label: round(seconds[f"run ray ({label})"] - seconds[f"run local ({label})"], 2)
            for label in ("before", "after")
            if f"run ray ({label})" in seconds
        },
        "phases_after_s": broken_down,
        "samples": {name: [round(v, 2) for v in values] for name, values in samples.items()},
        "note": "shared 2-core machine with other jobs running: load average before/after "
        "recorded; compare numbers only within this file",
        "niceness": os.nice(0),  # a benchmark run under `nice -n -10` competes less with the load
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_info(),
    }
    RESULTS.mkdir(exist_ok=True)
    write_result(RESULTS / args.output, result)
    print(json.dumps({k: result[k] for k in ("seconds", "ratios_to_imports")}, indent=2))


if __name__ == "__main__":
    main()
