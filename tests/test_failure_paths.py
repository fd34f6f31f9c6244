"""Clean failure paths: a write that fails (disk full, on a real small tmpfs where this machine
lets us mount one, and simulated) leaves no temporary behind and the rerun after freeing space
finishes once; verify ignores a temporary a crash left; duplicate manifest columns are refused
with exit 2; a closed output pipe ends `stepedit audit` quietly."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from durability import CLI, REPO, check_finished_run, cli_env

from stepedit_core.audit import verify_run
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.cli import main

from conftest import run_inprocess, write_clip, write_manifest

CLIPS, ROUNDS = 6, 2


def catalog(folder: Path) -> str:
    folder.mkdir(parents=True)
    rows = [
        {"clip_id": f"c{i}", "audio_uri": write_clip(folder / f"c{i}.wav", 0.5)}
        for i in range(CLIPS)
    ]
    return write_manifest(folder / "m.parquet", rows)


def job(manifest: str, out: str) -> JobSpec:
    return JobSpec(
        manifest_uri=manifest,
        out=out,
        run_id="r",
        edits=list(parse_chain("loudness=-23")),
        iterations=ROUNDS,
        shard_size=3,
        executor="local",
        report="none",
    )


def temporaries(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if ".tmp-" in p.name]


def small_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"mounting a {size} tmpfs failed: {done.stderr}"


# CI runs as root; elsewhere test_a_write_that_fails_midway_removes_its_temporary covers the
# same clean-up path with a simulated failure
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_on_a_small_tmpfs_leaves_no_temporaries_and_the_rerun_finishes(tmp_path):
    manifest = catalog(tmp_path / "cat")
    disk = tmp_path / "disk"
    small_tmpfs(disk, "1m")
    try:
        out = disk / "runs"
        filler = disk / "filler"
        # leave about 40 KB free: the run starts, its first part does not fit
        filler.write_bytes(b"\0" * ((1 << 20) - 40 * 1024))
        with pytest.raises(OSError) as caught:
            run_inprocess(job(manifest, str(out)))
        assert caught.value.errno == errno.ENOSPC
        assert temporaries(disk) == []
        filler.unlink()
        record = run_inprocess(job(manifest, str(out)))
        assert record["counts"]["ok"] == CLIPS
        check_finished_run(str(out), "r", CLIPS, ROUNDS)
        assert verify_run(str(out), "r").intact
        assert temporaries(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)


class HalfWritten:
    """A file handle on a disk that fills up halfway through the write."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __enter__(self) -> HalfWritten:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def write(self, data: bytes) -> None:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_fails_midway_removes_its_temporary(tmp_path, monkeypatch):
    """Disk full simulated (any machine): the third delivered file fills the disk."""
    from fsspec.implementations.local import LocalFileSystem

    manifest = catalog(tmp_path / "cat")
    out = tmp_path / "runs"
    real_open = LocalFileSystem.open
    opened = {"audio": 0}

    def open_on_a_filling_disk(self, path, mode="rb", **kwargs):
        handle = real_open(self, path, mode, **kwargs)
        if "/audio/" in str(path) and "w" in mode:
            opened["audio"] += 1
            if opened["audio"] == 3:
                return HalfWritten(handle)
        return handle

    monkeypatch.setattr(LocalFileSystem, "open", open_on_a_filling_disk)
    with pytest.raises(OSError, match="No space left"):
        run_inprocess(job(manifest, str(out)))
    monkeypatch.undo()
    assert opened["audio"] == 3
    assert temporaries(out) == []
    record = run_inprocess(job(manifest, str(out)))
    assert record["counts"]["ok"] == CLIPS
    assert verify_run(str(out), "r").intact


def test_verify_ignores_a_temporary_a_crash_left(tmp_path):
    manifest = catalog(tmp_path / "cat")
    out = tmp_path / "runs"
    run_inprocess(job(manifest, str(out)))
    audio = out / "r" / "audio"
    first = sorted(audio.glob("*.flac"))[0]
    (audio / f".{first.name}.tmp-{uuid.uuid4().hex}").write_bytes(b"half a file")
    report = verify_run(str(out), "r")
    assert report.intact, report.text()
    (out / "r" / "run.json").unlink()  # unfinished: the next attempt resumes it
    run_inprocess(job(manifest, str(out)))
    assert temporaries(out) == []  # the resumed attempt removed the crash's leftover


def test_duplicate_manifest_columns_are_refused_with_exit_2(tmp_path, capsys):
    clip = write_clip(tmp_path / "a.wav", 0.5)
    table = pa.Table.from_arrays(
        [pa.array(["a"]), pa.array([clip]), pa.array(["b"])],
        names=["clip_id", "audio_uri", "clip_id"],
    )
    pq.write_table(table, tmp_path / "dup.parquet")
    args = ["run", str(tmp_path / "dup.parquet"), "--out", str(tmp_path / "out")]
    code = main([*args, "--run-id", "x", "--edit", "denoise", "--executor", "local"])
    err = capsys.readouterr().err
    assert code == 2 and "duplicate column name(s): clip_id" in err, err


def test_a_closed_output_pipe_ends_audit_quietly(tmp_path):
    manifest = catalog(tmp_path / "cat")
    out = tmp_path / "runs"
    run_inprocess(job(manifest, str(out)))
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`head`) is gone before anything is written
    try:
        done = subprocess.run(
            [sys.executable, "-c", CLI, "audit", str(out / "r"), "c0"],
            cwd=REPO,
            env=cli_env(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141
