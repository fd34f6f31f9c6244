"""Shared fixtures: one Ray instance and one Prefect test server per test session, and small
generated clips and manifests."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stepedit_core.executors.local import LocalExecutor
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.run import run_job
from stepedit_flows import local_server

os.environ.setdefault("RAY_ACCEPT_ONNX_IN_WORKERS", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Runs in the tests use the test session's Prefect server (or a temporary one of their own), not
# a local server that would outlive the test; tests of the local server ask for it.
os.environ.setdefault("STEPEDIT_PREFECT_SERVER", "temporary")
# Likewise runs on the Ray executor start a Ray of their own, not a shared local cluster that
# would outlive the session; tests of the shared cluster ask for it (test_local_ray.py).
os.environ.setdefault("STEPEDIT_RAY", "temporary")
# Ray's temporary folder of the session's own: `ray.init()` without an address joins the cluster
# that the machine's last `ray start` recorded under /tmp/ray, so on a shared machine the tests'
# runs (in this process and in the subprocesses that inherit the environment) would join a
# stranger's cluster; a short path, since Ray's socket paths must stay under 108 bytes. Each test
# process has its own, xdist's workers too (they inherit the environment of the process that
# started them, so a folder made there is replaced); a RAY_TMPDIR set by the user is kept.
_OWN_RAY_TMPDIR_ENV = "STEPEDIT_TESTS_RAY_TMPDIR"
SESSION_RAY_TMPDIR: str | None = None
if os.environ.get("RAY_TMPDIR", "") in ("", os.environ.get(_OWN_RAY_TMPDIR_ENV)):
    SESSION_RAY_TMPDIR = tempfile.mkdtemp(prefix="sr", dir="/tmp")
    os.environ["RAY_TMPDIR"] = os.environ[_OWN_RAY_TMPDIR_ENV] = SESSION_RAY_TMPDIR
    atexit.register(shutil.rmtree, SESSION_RAY_TMPDIR, True)

# `stepedit` runs the durability tests start as subprocesses (tests/durability.py) share one
# local Prefect server in a Prefect home of the session's own: the first run starts it, the
# others reuse it instead of each starting a temporary server; it is stopped when the session
# ends (and stops itself after its idle time if the session is killed).
SESSION_PREFECT_HOME = Path(tempfile.gettempdir()) / f"stepedit-tests-prefect-{os.getpid()}"


def shared_server_env() -> dict[str, str]:
    return {
        "PREFECT_HOME": str(SESSION_PREFECT_HOME),
        local_server.MODE_ENV: "auto",
        local_server.IDLE_ENV: "300",
    }


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core, at most 4 (each worker runs its own Ray and Prefect
    server, and the end-to-end tests start more of both)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with the most slow tests first (order within a file kept): under `--dist loadfile`
    the long files start at once and the short ones fill in around them, so no long file is
    left to run alone at the end."""
    slow: dict[Path, int] = {}  # file -> its slow tests, in collection order
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + bool(item.get_closest_marker("slow"))
    files = sorted(slow, key=lambda path: -slow[path])  # a stable sort: ties keep their order
    rank = {path: n for n, path in enumerate(files)}
    items.sort(key=lambda item: rank[item.path])


@pytest.fixture(scope="session", autouse=True)
def _stop_the_shared_prefect_server() -> Iterator[None]:
    yield
    if SESSION_PREFECT_HOME.exists():
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("PREFECT_HOME", str(SESSION_PREFECT_HOME))
            local_server.stop()
        shutil.rmtree(SESSION_PREFECT_HOME, ignore_errors=True)


def tone(
    seconds: float = 1.0,
    rate: int = 24000,
    f0: float = 180.0,
    channels: int = 1,
    level: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """A voiced, speech-like test signal: a few harmonics with a slow amplitude envelope."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)
    noise = np.random.default_rng(seed).normal(0, 0.003, t.shape)
    mono = (level * wave / np.max(np.abs(wave)) * envelope + noise).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def write_clip(
    path: Path, seconds: float = 1.0, rate: int = 24000, channels: int = 1, **kwargs: float
) -> str:
    sf.write(path, tone(seconds, rate, channels=channels, **kwargs), rate)
    return str(path)


def write_manifest(path: Path, rows: list[dict]) -> str:
    columns = sorted({k for row in rows for k in row})
    table = pa.table({c: pa.array([row.get(c) for row in rows], pa.string()) for c in columns})
    pq.write_table(table, path)
    return str(path)


def run_inprocess(job: JobSpec) -> dict:
    """The flow's steps without Prefect, on the local executor; returns the run record."""
    return run_job(job, executor=LocalExecutor())


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def monkeypatch_session() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="session")
def s3(monkeypatch_session: pytest.MonkeyPatch) -> Iterator[object]:
    """One moto S3 server over real HTTP for the whole session (moto keeps its buckets in the
    process, so a second server would see the same ones); buckets `catalog` and `runs`."""
    import fsspec
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch_session.setenv(name, value)
    monkeypatch_session.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    # another test of this process may have made them already (moto keeps buckets per process)
    fs.makedirs("catalog", exist_ok=True)
    fs.makedirs("runs", exist_ok=True)
    yield fs
    fsspec.config.conf.pop("s3", None)
    server.stop()


def put_clip(fs: object, key: str, seconds: float) -> str:
    """A FLAC clip uploaded to S3; returns its s3:// URI."""
    buffer = io.BytesIO()
    sf.write(buffer, tone(seconds), 24000, format="FLAC")
    fs.pipe(key, buffer.getvalue())  # type: ignore[attr-defined]
    return f"s3://{key}"
