"""The run layout on any fsspec filesystem (local disk, S3), with atomic writes.

OUT/RUN_ID/
    run.json                     parameters, versions, input sha256, times, counts
    manifest.parquet             one row per input row, input order, status/output_uri/error
    iterations/                  Parquet dataset: one record per clip per round, FLAC inside
    audio/                       final audio, one lossless file per clip that finished
    _work/                       plan and per-shard results (kept for audit and resume)
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq


class RunStore:
    def __init__(self, out: str, run_id: str) -> None:
        self.fs, root = fsspec.core.url_to_fs(out)
        protocol = self.fs.protocol
        self.protocol = protocol if isinstance(protocol, str) else protocol[0]
        self.root = posixpath.join(root.rstrip("/"), run_id)
        self.run_id = run_id

    # paths -----------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri(self, path: str) -> str:
        """A path on this filesystem as a URI users can open (plain path on local disk)."""
        if self.protocol in ("file", "local"):
            return path
        return f"{self.protocol}://{path}"

    @property
    def run_json(self) -> str:
        return self.path("run.json")

    @property
    def manifest(self) -> str:
        return self.path("manifest.parquet")

    @property
    def iterations_dir(self) -> str:
        return self.path("iterations")

    def shard_plan(self, shard: int) -> str:
        return self.path("_work", "plan", f"shard-{shard:05d}.parquet")

    def shard_results(self, shard: int) -> str:
        return self.path("_work", "results", f"shard-{shard:05d}.parquet")

    def plan_failures(self) -> str:
        return self.path("_work", "results", "plan-failures.parquet")

    def results_dir(self) -> str:
        return self.path("_work", "results")

    def iteration_part(self, shard: int, part: int) -> str:
        return self.path("iterations", f"shard-{shard:05d}-part-{part:05d}.parquet")

    def audio_path(self, clip_id: str, row_index: int, ext: str = "flac") -> str:
        # clip ids are user text: keep a readable, filesystem-safe stem plus the row for uniqueness
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id)[:80].strip("._") or "clip"
        return self.path("audio", f"{row_index:08d}-{stem}.{ext}")

    # writes ----------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Readers never see half a file: local writes go to a temp name and are renamed;
        an object-store PUT is already all-or-nothing."""
        parent = posixpath.dirname(path)
        if self.protocol in ("file", "local"):
            self.fs.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
            with self.fs.open(tmp, "wb") as handle:
                handle.write(data)
            self.fs.mv(tmp, path)
        else:
            with self.fs.open(path, "wb") as handle:
                handle.write(data)

    def write_table(self, path: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.write_bytes(path, sink.getvalue())

    def write_json(self, path: str, payload: dict[str, Any]) -> None:
        self.write_bytes(path, (json.dumps(payload, indent=2, default=str) + "\n").encode())

    # reads -----------------------------------------------------------------
    def read_table(self, path: str) -> pa.Table:
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle)

    def read_json(self, path: str) -> dict[str, Any]:
        with self.fs.open(path, "rb") as handle:
            return json.loads(handle.read())

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def list(self, directory: str, prefix: str = "") -> list[str]:
        if not self.fs.exists(directory):
            return []
        names = self.fs.ls(directory, detail=False)
        return sorted(
            n for n in names if posixpath.basename(n).startswith(prefix) and n.endswith(".parquet")
        )

    def remove(self, paths: list[str]) -> None:
        for path in paths:
            self.fs.rm(path)

    def clear_outputs(self) -> None:
        """Remove everything a run writes, so a re-planned run starts from a clean folder."""
        for name in ("_work", "iterations", "audio", "manifest.parquet", "run.json"):
            path = self.path(name)
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
