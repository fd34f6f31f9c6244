"""Bounded inputs: a FIFO, a device or a socket fails at plan time as not_regular_file without
being opened; a file over the size limit (a sparse 8 GB file, an S3 object) fails as
file_too_large before it is read; a header that claims more audio than the limit is refused
before decoding; a read that blocks fails as read_timeout. The healthy rows of the same batch
finish."""

from __future__ import annotations

import io
import os
import socket
import threading

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from fsspec.implementations.memory import MemoryFileSystem

from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.sources import InputLimits
from stepedit_core.lifecycle.job import JobSpec

from conftest import put_clip, run_inprocess, write_clip, write_manifest


def job(manifest: str, out: str, **extra) -> JobSpec:
    return JobSpec(
        manifest_uri=manifest,
        out=out,
        run_id="r",
        edits=list(parse_chain("loudness=-23")),
        executor="local",
        report="none",
        **extra,
    )


def run_guarded(job_spec: JobSpec, seconds: float = 120.0) -> dict:
    """The run in a thread: a run that hangs (reading a FIFO) fails the test instead of it."""
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(record=run_inprocess(job_spec)))
    thread.daemon = True
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the run hung"
    assert "record" in outcome, "the run raised (see the thread's traceback above)"
    return outcome["record"]


def outcome_by_clip(out, run_id="r") -> dict[str, tuple[str, str | None, str | None]]:
    rows = pq.read_table(f"{out}/{run_id}/manifest.parquet").to_pylist()
    return {r["clip_id"]: (r["status"], r["error_code"], r["error"]) for r in rows}


def test_fifo_device_socket_and_sparse_file_fail_at_plan_time_and_the_batch_goes_on(tmp_path):
    catalog = tmp_path / "cat"
    catalog.mkdir()
    fifo = catalog / "pipe.wav"
    os.mkfifo(fifo)
    sparse = catalog / "huge.wav"
    with open(sparse, "wb") as handle:
        handle.truncate(8 << 30)  # 8 GB, no blocks on disk
    sock_path = catalog / "s.wav"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    rows = [
        {"clip_id": "fifo", "audio_uri": str(fifo)},
        {"clip_id": "good", "audio_uri": write_clip(catalog / "good.wav", 0.5)},
        {"clip_id": "zero", "audio_uri": "/dev/zero"},
        {"clip_id": "sparse", "audio_uri": str(sparse)},
        {"clip_id": "socket", "audio_uri": str(sock_path)},
    ]
    manifest = write_manifest(catalog / "m.parquet", rows)
    try:
        record = run_guarded(
            job(manifest, str(tmp_path / "out"), allow_roots=[str(catalog), "/dev"])
        )
    finally:
        server.close()
    got = outcome_by_clip(tmp_path / "out")
    assert got["good"][0] == "ok"
    assert got["fifo"][1] == "not_regular_file" and "FIFO" in got["fifo"][2]
    assert got["zero"][1] == "not_regular_file" and "character device" in got["zero"][2]
    assert got["socket"][1] == "not_regular_file" and "socket" in got["socket"][2]
    assert got["sparse"][1] == "file_too_large" and "8589934592 bytes" in got["sparse"][2]
    assert "row 3" in got["sparse"][2] and "--max-input-mb" in got["sparse"][2]
    assert record["counts"]["refused_at_plan"] == 4


def test_a_fifo_that_appears_after_planning_is_still_never_opened(tmp_path):
    fifo = tmp_path / "late.wav"
    os.mkfifo(fifo)
    with pytest.raises(ItemFailure) as caught:
        audio_io.load(str(fifo))  # opening it would block this test forever
    assert caught.value.code == "not_regular_file"


def test_the_size_limit_is_configurable_and_checked_on_s3_before_reading(s3):
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 24000 * 12).astype(np.float32)
    big = io.BytesIO()
    sf.write(big, noise, 24000, format="WAV", subtype="FLOAT")  # about 1.15 MB
    s3.pipe("catalog/bounded/big.wav", big.getvalue())
    rows = [
        {"clip_id": "big", "audio_uri": "s3://catalog/bounded/big.wav"},
        {"clip_id": "good", "audio_uri": put_clip(s3, "catalog/bounded/good.flac", 0.5)},
    ]
    sink = io.BytesIO()
    write_manifest(sink, rows)  # type: ignore[arg-type]
    s3.pipe("catalog/bounded/m.parquet", sink.getvalue())
    record = run_inprocess(
        job("s3://catalog/bounded/m.parquet", "s3://runs/bounded", max_input_mb=1)
    )
    assert record["counts"]["ok"] == 1
    fs, root = fsspec.core.url_to_fs("s3://runs/bounded/r/manifest.parquet")
    rows = pq.read_table(io.BytesIO(fs.cat_file(root))).to_pylist()
    got = {r["clip_id"]: (r["status"], r["error_code"], r["error"]) for r in rows}
    assert got["good"][0] == "ok"
    assert got["big"][1] == "file_too_large" and "over the 1 MB limit" in got["big"][2]


def huge_claiming_flac() -> bytes:
    """A 0.1 s FLAC whose STREAMINFO claims 2^35 samples (128 GB as float32)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.full(2400, 0.1, np.float32), 24000, format="FLAC")
    data = bytearray(buffer.getvalue())
    field = int.from_bytes(data[18:26], "big")
    field = (field & ~((1 << 36) - 1)) | (1 << 35)
    data[18:26] = field.to_bytes(8, "big")
    return bytes(data)


def test_a_header_claiming_more_audio_than_the_limit_is_refused_before_decoding():
    with pytest.raises(ItemFailure) as caught:
        audio_io.decode(huge_claiming_flac(), "claims.flac")
    assert caught.value.code == "file_too_large"
    assert "34359738368 frames" in str(caught.value)


def test_a_not_audio_message_names_the_file_not_a_buffer():
    with pytest.raises(ItemFailure) as caught:
        audio_io.decode(b"definitely not audio", "notes.wav")
    assert caught.value.code == "not_audio"
    assert "notes.wav" in str(caught.value) and "BytesIO" not in str(caught.value)


class BlockingFS(MemoryFileSystem):
    """An object store whose reads block until released: a stalled connection."""

    protocol = "blockingtest"
    release = threading.Event()

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.removeprefix("blockingtest://"))

    def _open(self, path, mode="rb", **kwargs):
        if mode == "rb":
            BlockingFS.release.wait()
        return super()._open(path, mode, **kwargs)


def test_a_read_that_blocks_fails_as_read_timeout():
    fsspec.register_implementation("blockingtest", BlockingFS, clobber=True)
    fs = fsspec.filesystem("blockingtest")
    fs.pipe("/stalled.wav", b"RIFF....")
    try:
        with pytest.raises(ItemFailure) as caught:
            audio_io.load("blockingtest:///stalled.wav", InputLimits(read_timeout_s=0.5))
        assert caught.value.code == "read_timeout"
        assert "--read-timeout" in str(caught.value)
    finally:
        BlockingFS.release.set()  # let the abandoned read finish


def test_a_manifest_that_is_a_fifo_is_refused_without_opening_it(tmp_path, capsys):
    from stepedit_flows.cli import main

    fifo = tmp_path / "m.parquet"
    os.mkfifo(fifo)
    args = ["run", str(fifo), "--out", str(tmp_path / "out"), "--run-id", "x"]
    code = main([*args, "--edit", "denoise", "--executor", "local"])  # would block if opened
    err = capsys.readouterr().err
    assert code == 2 and "FIFO" in err and "not a regular file" in err, err
