"""One attempt per run id: a second `stepedit run` while the first is alive is refused (exit 2,
naming the holder and since when); a SIGKILLed holder on this host is noticed at once; a lease
not renewed for longer than its TTL (another host) is taken over. Local disk and S3."""

from __future__ import annotations

import json
import socket
import time

import fsspec
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

from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.failpoints import HOLD_ENV
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.lease import TTL_S
from stepedit_flows.cli import main

from conftest import run_inprocess

CLIPS = 24


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path):
    """(manifest, out) of a small catalog on local disk or on the S3 server."""

    def make(clips: int, name: str) -> tuple[str, str]:
        if request.param == "local":
            return local_catalog(tmp_path / name, clips), str(tmp_path / "runs")
        fs = request.getfixturevalue("s3")
        return s3_catalog(fs, f"catalog/lease-{name}", clips), "s3://runs/lease"

    return make


def wait_for_lease(store: RunStore, proc, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, output(proc)
        store.fs.invalidate_cache()
        if store.exists(store.lease):
            return store.read_json(store.lease)
        time.sleep(0.2)
    raise AssertionError("the first run never took the lease")


@pytest.mark.slow
def test_second_run_is_refused_while_the_first_lives_then_takes_over(place, capsys):
    # a small catalog is enough: the hold point, not the catalog's size, keeps the first alive
    manifest, out = place(CLIPS, "busy")
    args = run_args(manifest, out, "busy", "--report", "none")  # no page: nothing reads it
    store = RunStore(out, "busy")
    # held while planning (the lease taken): the first run can not finish before the second asks
    first = start(args, cli_env({HOLD_ENV: "plan.shard_written"}))
    try:
        lease = wait_for_lease(store, first)
        code = main(args)  # in this process: the refusal comes before any work
        err = capsys.readouterr().err
    finally:
        kill_group(first)
    assert code == 2, err
    assert lease["holder"] in err and lease["since_iso"] in err  # who, and since when
    assert lease["pid"] == first.pid
    # the holder is dead (SIGKILL, no release): on the same host that is noticed at once
    store.fs.invalidate_cache()
    assert store.exists(store.lease)
    taken = stepedit(args, cli_env())
    assert taken.code == 0, taken.err
    check_finished_run(out, "busy", CLIPS, 1)
    store.fs.invalidate_cache()
    assert not store.exists(store.lease)  # released by the attempt that took over


def write_lease(store: RunStore, renewed_ago: float) -> None:
    now = time.time()
    other = f"not-{socket.gethostname()}"
    store.write_json(
        store.lease,
        {
            "holder": f"{other}:4242",
            "host": other,
            "pid": 4242,
            "token": "someone-else",
            "since": now - 3600,
            "since_iso": "2026-01-01T00:00:00+00:00",
            "renewed": now - renewed_ago,
        },
    )


def test_a_fresh_lease_of_another_host_refuses(place, capsys):
    manifest, out = place(2, "fresh")
    store = RunStore(out, "fresh")
    write_lease(store, renewed_ago=1.0)
    code = main(run_args(manifest, out, "fresh"))
    err = capsys.readouterr().err
    assert code == 2 and "not-" in err and ":4242" in err and "2026-01-01T00:00:00" in err
    store.fs.invalidate_cache()
    assert not store.exists(store.run_json)


def test_a_stale_lease_of_another_host_is_taken_over(place):
    manifest, out = place(3, "stale")
    store = RunStore(out, "stale")
    write_lease(store, renewed_ago=TTL_S + 1)
    job = JobSpec(
        manifest_uri=manifest,
        out=out,
        run_id="stale",
        edits=list(parse_chain("loudness=-23")),
        executor="local",
    )
    record = run_inprocess(job)
    assert record["counts"]["ok"] == 3
    # the lease was released by the attempt that took it over
    store.fs.invalidate_cache()
    assert not store.exists(store.lease)
    fs, root = fsspec.core.url_to_fs(f"{out}/stale")
    assert json.loads(fs.cat_file(f"{root}/run.json"))["attempt"] == 1
