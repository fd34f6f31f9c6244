"""Fenced leases: an attempt paused (SIGSTOP) past its lease's TTL loses the run id to a second
attempt; when it continues (SIGCONT) it commits nothing more and exits 4 saying so, and its
renewal never writes over the other holder's lease. Lease timings come from the environment so
the test waits seconds, not the default 30 s. The attempt pauses itself right after its first
commit (a stop point, see stepedit_core.foundation.failpoints), so it has shards left to try
whatever the
machine's load, and a small catalog is enough."""

from __future__ import annotations

import hashlib
import os
import signal
import time

import fsspec
import psutil
import pytest
from durability import (
    check_finished_run,
    cli_env,
    kill_group,
    local_catalog,
    output,
    run_args,
    s3_catalog,
    start,
    stepedit,
)

from stepedit_core.audit import verify_run
from stepedit_core.foundation.failpoints import STOP_ENV
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle import lease as lease_module
from stepedit_core.lifecycle.lease import RENEW_ENV, TTL_ENV, Lease, LeaseLost

CLIPS = 12
SHARD_SIZE = 4  # three shards: the paused attempt stops after the first
TTL = 3.0


def committed(out: str, run_id: str) -> dict[str, str]:
    """The committed parts and delivered files of a run folder, with their sha256."""
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{run_id}")
    fs.invalidate_cache()
    found = {}
    for folder in ("iterations", "audio"):
        if fs.exists(f"{root}/{folder}"):
            for path in sorted(fs.ls(f"{root}/{folder}", detail=False)):
                name = path.rsplit("/", 1)[1]
                found[f"{folder}/{name}"] = hashlib.sha256(fs.cat_file(path)).hexdigest()
    return found


def has_part(out: str, run_id: str) -> bool:
    fs, root = fsspec.core.url_to_fs(f"{out.rstrip('/')}/{run_id}/iterations")
    fs.invalidate_cache()
    return fs.exists(root) and any(p.endswith(".parquet") for p in fs.ls(root, detail=False))


def wait_until(condition, proc, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, output(proc)
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """(manifest, out) of a small catalog on local disk or on the S3 server."""
    if request.param == "local":
        return local_catalog(tmp_path / "cat", CLIPS), str(tmp_path / "runs")
    fs = request.getfixturevalue("s3")
    return s3_catalog(fs, "catalog/fence", CLIPS), "s3://runs/fence-e2e"


@pytest.mark.slow
def test_a_paused_holder_that_lost_its_lease_stops_and_commits_nothing_more(place):
    manifest, out = place
    env = cli_env({TTL_ENV: str(TTL), RENEW_ENV: "0.3"})
    # no review page: nothing here reads it, and it would come after run.json anyway
    args = run_args(manifest, out, "paused", "--shard-size", str(SHARD_SIZE), "--report", "none")
    store = RunStore(out, "paused")
    first = start(args, {**env, STOP_ENV: "shard.part_committed"})
    try:
        paused = psutil.Process(first.pid)
        wait_until(lambda: paused.status() == psutil.STATUS_STOPPED, first, "the pause")
        assert has_part(out, "paused")
        paused_lease = store.read_json(store.lease)

        def stale() -> bool:  # the paused holder can no longer renew: wait out its TTL
            store.fs.invalidate_cache()
            return time.time() - float(store.read_json(store.lease)["renewed"]) > TTL + 0.5

        wait_until(stale, first, "the paused holder's lease to expire")
        second = stepedit(args, env, timeout=240)
        assert second.code == 0, second.err
        after_second = committed(out, "paused")
        os.kill(first.pid, signal.SIGCONT)
        first.wait(timeout=120)
    finally:
        kill_group(first)
    out_text, err = output(first)
    assert first.returncode == 4, (first.returncode, err[-2000:])
    assert "lost its lease" in err and "committed nothing more" in err
    assert committed(out, "paused") == after_second  # nothing written after it continued
    check_finished_run(out, "paused", CLIPS, 1)
    report = verify_run(out, "paused")
    assert report.intact, report.text()
    assert paused_lease["pid"] == first.pid


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return RunStore(str(tmp_path / "runs"), "fenced")
    request.getfixturevalue("s3")
    return RunStore("s3://runs/fence", f"fenced-{os.getpid()}-{time.time_ns()}")


def test_renewal_never_overwrites_another_holders_lease(store):
    lease = Lease(store)
    lease.acquire()
    try:
        store.check_fence()  # held: nothing raised
        taken = {**store.read_json(store.lease), "token": "other", "holder": "elsewhere:1"}
        store.write_json(store.lease, taken)
        lease.renew_once()
        assert store.read_json(store.lease)["token"] == "other"
        with pytest.raises(LeaseLost, match="elsewhere:1"):
            store.check_fence(read=False)  # the renewal noticed: no read needed
    finally:
        lease.release()
    assert store.read_json(store.lease)["token"] == "other"  # release leaves it alone


def test_a_renewal_paused_between_its_read_and_its_write_does_not_bring_the_lease_back(
    store, monkeypatch
):
    """The holder is paused right after its renewal read its own token; meanwhile (past the TTL)
    another attempt takes the run over and finishes, removing the lease. On waking, the renewal
    must not write its stale lease back: a third attempt would find the run busy, and the
    paused attempt would pass its next commit's token check."""
    monkeypatch.setenv(TTL_ENV, "3")
    lease = Lease(store)
    lease.acquire()
    lease._stop.set()  # this test renews by hand, not the background thread
    lease._thread.join()
    clock = [time.time()]
    monkeypatch.setattr(lease_module.time, "time", lambda: clock[0])
    read = lease._holder

    def read_then_pause() -> dict | None:
        current = read()
        store.remove([store.lease])  # the other attempt took over, finished and released
        clock[0] += 10.0  # paused past the TTL
        return current

    monkeypatch.setattr(lease, "_holder", read_then_pause)
    lease.renew_once()
    assert not store.exists(store.lease), "the stale renewal wrote the lease back"
    with pytest.raises(LeaseLost, match="lost its lease: its renewal stalled 10 s"):
        store.check_fence(read=False)
    lease.release()


def test_a_commit_checks_the_token(store):
    lease = Lease(store)
    lease.acquire()
    try:
        store.write_json(store.lease, {**store.read_json(store.lease), "token": "other"})
        with pytest.raises(LeaseLost, match="lost its lease"):
            store.check_fence()
    finally:
        lease.release()
