"""Incremental runs: reuse what earlier runs under the same `--out` already edited.

A clip's result is named by a *finished key*: the sha256 of its source audio's sha256, its edit
chain, the rounds, the engine's name and version, the clip's seed and the job settings that
change what the engine produces. Two rows with the same key would produce the same output, so an
incremental run edits only rows whose key no earlier run finished; every other row becomes an ok
`RowResult` that points at the earlier output and names the run that produced it.

What lives under the output root (beside the run folders):

    OUT/_index/finished/<run_id>.parquet   written when a run finishes: one row per ok clip
                                           (key, clip_id, output_uri, run_id that produced the
                                           file, iterations_done)
    OUT/_index/sources/<run_id>.parquet    the source hashes an incremental run computed at
                                           plan time, with the size and mtime/ETag they were
                                           computed for

No run id starts with `_` (job.py), so `_index/` never clashes with a run folder.

The lookup reads the union of the small `finished/` files once (one read per earlier run, all
in one Arrow dataset scan) and answers every row from a dict, so its cost does not grow with the
number of files an earlier run wrote. Knowing that a source file did not change needs its
content hash; a file whose size and mtime/ETag (fsspec `info()`) match an earlier hash reuses
that hash, so an unchanged catalog costs one `info()` per row and only new or touched files are
read.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler, PyFileSystem

from stepedit_core.catalog.records import PlanRow, RowResult
from stepedit_core.engines.base import Engine
from stepedit_core.foundation.edits import format_chain
from stepedit_core.foundation.retry import retrying
from stepedit_core.foundation.store import INDEX_DIR, OutLayout, RunStore, list_objects
from stepedit_core.lifecycle.job import JobSpec

FINISHED_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("clip_id", pa.string()),
        ("output_uri", pa.string()),
        ("run_id", pa.string()),  # the run whose audio/ holds output_uri
        ("iterations_done", pa.int32()),
        # what the output manifest says of the delivered round, carried to rows reusing it
        ("selected_round", pa.int32()),
        ("selection_reason", pa.string()),
        ("qc_status", pa.string()),
        ("qc_reasons", pa.string()),
    ]
)
DELIVERY_COLUMNS = ("selected_round", "selection_reason", "qc_status", "qc_reasons")
SOURCES_SCHEMA = pa.schema(
    [
        ("audio_uri", pa.string()),
        ("size", pa.int64()),
        ("stamp", pa.string()),
        ("sha256", pa.string()),
    ]
)
# fields of fsspec `info()` that change when an object's bytes change, in order of preference:
# object stores give an ETag or checksum, local disk and most others a modification time
_STAMP_FIELDS = ("ETag", "etag", "md5Hash", "crc32c", "mtime", "LastModified", "last_modified")
HASH_THREADS = 16  # source files are hashed concurrently: the cost is I/O, not CPU


def key_settings(job: JobSpec, engine: Engine) -> str:
    """The run-wide part of every finished key: what the job and engine decide for all rows
    (hashed once per run, so a row's key costs one short sha256). Which settings join is
    declared with each setting (`Setting.key` in stepedit_core/foundation/settings.py)."""
    settings = {**job.key_settings(), "engine": engine.name, "engine_version": engine.version}
    material = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def finished_key(source_sha256: str, row: PlanRow, settings: str) -> str:
    """Names one clip's result: equal keys mean the same input bytes edited the same way
    (`settings` from `key_settings`). Fields are joined by a byte no field contains."""
    fields = [settings, source_sha256, format_chain(row.edits), str(row.seed)]
    if row.segments is not None:  # a chapter's segment texts are what the model is told
        fields.append(row.segments)
    material = "\x00".join(fields)
    return hashlib.sha256(material.encode()).hexdigest()


class OutIndex:
    """The `_index/` folder of one output root."""

    def __init__(self, out: str) -> None:
        self.fs, root = fsspec.core.url_to_fs(out)
        self.out = out
        self.layout = OutLayout(root)
        self.dir = self.layout.index_dir

    def finished_path(self, run_id: str) -> str:
        return self.layout.index_file("finished", run_id)

    def sources_path(self, run_id: str) -> str:
        return self.layout.index_file("sources", run_id)

    def _files(self, kind: str, skip_run: str) -> list[str]:
        skip = f"{skip_run}.parquet"
        names = list_objects(self.fs, self.layout.index_folder(kind))
        return [n for n in names if posixpath.basename(n) != skip]

    def _read_union(self, paths: list[str], schema: pa.Schema) -> pa.Table:
        """All files as one table, read in one multi-threaded scan."""
        if not paths:
            return schema.empty_table()
        filesystem = PyFileSystem(FSSpecHandler(self.fs))
        table = retrying(
            lambda: pq.read_table(paths, filesystem=filesystem, schema=schema),
            f"reading {len(paths)} index file(s) under {self.dir}",
        )
        return table.select(schema.names)

    def finished(self, current_run: str) -> pa.Table:
        """Every earlier ok clip whose producing run still has its run.json, one row per key.

        The current run's own entries are left out: a run id started afresh (`--overwrite`)
        clears its outputs, so nothing may point into it."""
        table = self._read_union(self._files("finished", current_run), FINISHED_SCHEMA)
        if table.num_rows == 0:
            return table
        runs = pc.unique(table.column("run_id")).to_pylist()
        alive = [r for r in runs if r != current_run and self._finished(r)]
        table = table.filter(pc.is_in(table.column("run_id"), pa.array(alive, pa.string())))
        return _first_per_key(table)

    def _finished(self, run_id: str) -> bool:
        path = self.layout.run_json(run_id)
        return bool(retrying(lambda: self.fs.exists(path), f"looking up {path}"))

    def sources(self, current_run: str) -> dict[tuple[str, int, str], str]:
        """(audio_uri, size, stamp) -> sha256 from every earlier incremental run."""
        table = self._read_union(self._files("sources", current_run), SOURCES_SCHEMA)
        return {
            (uri, size, stamp): sha
            for uri, size, stamp, sha in zip(
                *(table.column(n).to_pylist() for n in SOURCES_SCHEMA.names), strict=True
            )
        }

    def write(self, path: str, table: pa.Table) -> None:
        # RunStore's atomic write; its run folder is unused, `path` is absolute on the same fs
        RunStore(self.out, INDEX_DIR).write_table(path, table)


def _first_per_key(table: pa.Table) -> pa.Table:
    """One row per key: a run that reused an output names it again (same file, same producing
    run), so any one of the rows will do."""
    if len(pc.unique(table.column("key"))) == table.num_rows:
        return table
    numbered = table.append_column("_i", pa.array(range(table.num_rows), pa.int64()))
    first = numbered.group_by("key").aggregate([("_i", "min")]).column("_i_min")
    return table.take(first)


@dataclass
class SourceStamp:
    audio_uri: str
    size: int
    stamp: str
    sha256: str


class SourceHasher:
    """Content hashes of source files, reusing an earlier hash when size and stamp match.

    A file that can not be looked up or read has no hash (None): its row is edited as usual and
    fails there with the code loading gives it (missing file, say)."""

    def __init__(self, known: dict[tuple[str, int, str], str]) -> None:
        self.known = known
        self.seen: dict[str, SourceStamp | None] = {}
        self.hashed = 0  # files read in full
        self.reused = 0  # files whose earlier hash was reused

    def hash_all(self, uris: Sequence[str]) -> list[str | None]:
        todo = [u for u in dict.fromkeys(uris) if u not in self.seen]
        if todo:
            with ThreadPoolExecutor(min(HASH_THREADS, len(todo))) as pool:
                for uri, stamped in zip(todo, pool.map(self._stamp, todo), strict=True):
                    self.seen[uri] = stamped
        return [s.sha256 if (s := self.seen[u]) is not None else None for u in uris]

    def _stamp(self, uri: str) -> SourceStamp | None:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            fs.invalidate_cache(path)  # a listing cached earlier in this process may be stale
            info = retrying(lambda: fs.info(path), f"looking up {uri}")
        except (OSError, ValueError):
            return None
        size = int(info.get("size") or 0)
        stamp = next((str(info[f]) for f in _STAMP_FIELDS if info.get(f) is not None), "")
        known = self.known.get((uri, size, stamp)) if stamp else None
        if known is not None:
            self.reused += 1
            return SourceStamp(uri, size, stamp, known)
        digest = hashlib.sha256()
        try:
            with fs.open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            return None
        self.hashed += 1
        return SourceStamp(uri, size, stamp, digest.hexdigest())

    def table(self) -> pa.Table:
        rows = [vars(s) for s in self.seen.values() if s is not None and s.stamp]
        return pa.Table.from_pylist(rows, SOURCES_SCHEMA)


class Reuse:
    """Plan-time lookup: which planned rows an earlier run already finished."""

    def __init__(self, job: JobSpec, engine: Engine) -> None:
        self.job = job
        self.index = OutIndex(job.out)
        finished = self.index.finished(job.run_id)
        self.by_key = {k: i for i, k in enumerate(finished.column("key").to_pylist())}
        self.output_uri = finished.column("output_uri").to_pylist()
        self.run_id = finished.column("run_id").to_pylist()
        self.iterations_done = finished.column("iterations_done").to_pylist()
        self.delivery = {c: finished.column(c).to_pylist() for c in DELIVERY_COLUMNS}
        self.hasher = SourceHasher(self.index.sources(job.run_id))
        self.settings = key_settings(job, engine)

    def split(
        self, rows: Sequence[PlanRow]
    ) -> tuple[list[PlanRow], list[RowResult], list[tuple[int, str]]]:
        """(rows to edit, reused results, (row_index, key) of each reused row) for a batch."""
        shas = self.hasher.hash_all([r.audio_uri for r in rows])
        todo: list[PlanRow] = []
        reused: list[RowResult] = []
        keys: list[tuple[int, str]] = []
        for row, sha in zip(rows, shas, strict=True):
            key = finished_key(sha, row, self.settings) if sha is not None else ""
            found = self.by_key.get(key)
            if found is None:
                todo.append(row)
                continue
            result = RowResult.ok(
                row.row_index, row.clip_id, self.output_uri[found], self.iterations_done[found]
            )
            result.reused_from_run = self.run_id[found]
            for column, values in self.delivery.items():
                setattr(result, column, values[found])
            reused.append(result)
            keys.append((row.row_index, key))
        return todo, reused, keys

    def save_sources(self) -> None:
        if self.hasher.seen:
            self.index.write(self.index.sources_path(self.job.run_id), self.hasher.table())


def write_finished(store: RunStore, job: JobSpec, engine: Engine) -> int:
    """Record this run's ok clips in `OUT/_index/finished/<run_id>.parquet`; returns how many.

    Edited rows are keyed by the source hash their first round recorded (what was actually
    read); reused rows carry the key and producing run planning found, so a later run finds
    every output through the newest index file that names it."""
    plans = _plan_rows(store)
    sources = _first_round_sources(store)
    reused_keys = _reused_keys(store)
    settings = key_settings(job, engine)
    rows: list[dict] = []
    for path in store.list(store.results_dir()):
        table = store.read_table(path)
        has_reused = "reused_from_run" in table.column_names
        for result in table.to_pylist():
            if result["status"] != "ok":
                continue
            row_index = result["row_index"]
            reused_from = result["reused_from_run"] if has_reused else None
            if reused_from is not None:
                key = reused_keys.get(row_index)
            elif row_index in plans and row_index in sources:
                key = finished_key(sources[row_index], plans[row_index], settings)
            else:
                key = None
            if key is None:
                continue
            rows.append(
                {
                    "key": key,
                    "clip_id": result["clip_id"],
                    "output_uri": result["output_uri"],
                    "run_id": reused_from or job.run_id,
                    "iterations_done": result["iterations_done"],
                    **{c: result.get(c) for c in DELIVERY_COLUMNS},
                }
            )
    index = OutIndex(job.out)
    index.write(index.finished_path(job.run_id), pa.Table.from_pylist(rows, FINISHED_SCHEMA))
    return len(rows)


def _plan_rows(store: RunStore) -> dict[int, PlanRow]:
    plans: dict[int, PlanRow] = {}
    for path in store.list(store.plan_dir, prefix="shard-"):
        for row in store.read_table(path).to_pylist():
            plans[row["row_index"]] = PlanRow.from_row(row)
    return plans


def _reused_keys(store: RunStore) -> dict[int, str]:
    path = store.reused_keys
    if not store.exists(path):
        return {}
    table = store.read_table(path)
    rows, keys = table.column("row_index").to_pylist(), table.column("key").to_pylist()
    return dict(zip(rows, keys, strict=True))


def _first_round_sources(store: RunStore) -> dict[int, str]:
    """row_index -> input_sha256 of the clip's first round record (its source file's hash)."""
    first: dict[int, tuple[int, str]] = {}
    for part in store.list(store.iterations_dir):
        table = store.read_table(part, columns=["row_index", "iteration", "input_sha256"])
        for row_index, iteration, sha in zip(
            *(table.column(n).to_pylist() for n in ("row_index", "iteration", "input_sha256")),
            strict=True,
        ):
            if sha and (row_index not in first or iteration < first[row_index][0]):
                first[row_index] = (iteration, sha)
    return {r: sha for r, (_, sha) in first.items()}


REUSED_KEYS_SCHEMA = pa.schema([("row_index", pa.int64()), ("key", pa.string())])


def reused_keys_table(keys: list[tuple[int, str]]) -> pa.Table:
    return pa.Table.from_pylist([{"row_index": r, "key": k} for r, k in keys], REUSED_KEYS_SCHEMA)
