"""The run layout on any fsspec filesystem (local disk, S3), with atomic writes.

OUT/RUN_ID/
    stepedit-run.json            the marker: this folder is a run's (ownership.py)
    scheduled.json               which scheduled flow run took this run id
    run.json                     parameters, versions, input sha256, times, counts
    manifest.parquet             one row per input row, input order, status/output_uri/error
    iterations/                  committed parts: one record per clip per round
    round-audio/                 each round's audio, `<sha256>.flac`, referenced by its record
    audio/                       final audio, one lossless file per clip that finished
    audit/records.parquet        where each clip round's record is, with its hashes
    report/                      the review page (index.html, report.json, media)
    judgements/, eval/           a judged run's verdicts and its accuracy tables
    dataset/                     a margin-set run's pairs (sft.parquet), data card, clones
    _work/job.json               what the run id was started with (a resume must match it)
    _work/lease.json             who is running this run id now (one at a time)
    _work/plan/                  shard plans; `done.json` once planning finished
    _work/results/               refused rows, and each finished shard's row results
    _work/stopped.json           where the last attempt stopped, when it was stopped
    _work/quarantine/            objects a resume found damaged, moved aside
    _work/logs/                  each attempt's log file

Beside the run folders (`OutLayout`): OUT/_index/ holds what incremental runs look up, and
OUT/_datasets/RUN_ID/rows.parquet the manifest a margin-set run derived and edits.
Every path of this layout is built here; other modules ask `RunStore` or `OutLayout` for it.

Every object is written whole or not at all: local writes go to a temporary name (that no
`*.parquet` glob matches) and are renamed; an object-store PUT is already all-or-nothing. Calls
that fail because the endpoint is unreachable are retried with backoff (`retry.py`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import re
import shutil
import uuid
from typing import Any, Protocol

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.foundation.retry import retrying

LOCAL = ("file", "local")
RUN_JSON = "run.json"
WORK_DIR = "_work"
INDEX_DIR = "_index"  # beside the run folders; no run id starts with `_` (job.py)
DATASETS_DIR = "_datasets"
MARKER = "stepedit-run.json"  # a run folder's mark (ownership.py)
ROUND_AUDIO = "round-audio"  # the run's folder of round audio objects


def list_objects(fs: Any, directory: str, prefix: str = "", suffix: str = ".parquet") -> list[str]:
    """Objects directly in `directory` whose names start with `prefix` and end with `suffix`,
    sorted; a fresh listing (no stale cache), retried when the endpoint is unreachable."""

    def ls() -> list[str]:
        fs.invalidate_cache(directory)
        if not fs.exists(directory):
            return []
        return fs.ls(directory, detail=False)

    names = retrying(ls, f"listing {directory}")
    return sorted(
        n for n in names if posixpath.basename(n).startswith(prefix) and n.endswith(suffix)
    )


class Fence(Protocol):
    """The holder of the run id's lease (lease.py): `check` raises once it is lost."""

    def check(self, read: bool = True) -> None: ...


class RunStore:
    def __init__(self, out: str, run_id: str) -> None:
        self.fs, root = fsspec.core.url_to_fs(out)
        protocol = self.fs.protocol
        self.protocol = protocol if isinstance(protocol, str) else protocol[0]
        self.root = posixpath.join(root.rstrip("/"), run_id)
        self.run_id = run_id
        self.fence: Fence | None = None  # set while an attempt holds the lease

    def check_fence(self, read: bool = True) -> None:
        """Before a commit: stop (LeaseLost) if this attempt lost the run id's lease."""
        if self.fence is not None:
            self.fence.check(read)

    # paths -----------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri(self, path: str) -> str:
        """A path on this filesystem as a URI users can open (plain path on local disk)."""
        if self.protocol in LOCAL:
            return path
        return f"{self.protocol}://{path}"

    @property
    def marker(self) -> str:
        return self.path(MARKER)

    @property
    def scheduled_claim(self) -> str:
        """Written when a scheduled flow run takes this run id, so a retry of the same flow run
        finds its own folder again and a different flow run never writes into it."""
        return self.path("scheduled.json")

    @property
    def run_uri(self) -> str:
        """The run folder as a URI (what run-relative references resolve against)."""
        return self.uri(self.root)

    @property
    def run_json(self) -> str:
        return self.path(RUN_JSON)

    @property
    def run_json_seal(self) -> str:
        """The sha256 of run.json, written beside it."""
        return self.path(RUN_JSON + ".sha256")

    @property
    def work_dir(self) -> str:
        return self.path(WORK_DIR)

    @property
    def logs_dir(self) -> str:
        """Each attempt's log file (Prefect's and Ray's lines); kept by --overwrite."""
        return self.path(WORK_DIR, "logs")

    @property
    def manifest(self) -> str:
        return self.path("manifest.parquet")

    @property
    def iterations_dir(self) -> str:
        return self.path("iterations")

    @property
    def audio_dir(self) -> str:
        return self.path("audio")

    def delivered_file(self, uri: str) -> str:
        """Where a delivered file named by its URI (run.json, manifest) is in this run's
        audio folder: the name counts, not the prefix it was recorded under."""
        return self.path("audio", posixpath.basename(uri))

    @property
    def audit_dir(self) -> str:
        return self.path("audit")

    @property
    def audit_index(self) -> str:
        """Where each clip round's record is, with its hashes (audit/records.py)."""
        return self.path("audit", "records.parquet")

    @property
    def report_dir(self) -> str:
        return self.path("report")

    def report_file(self, rel: str) -> str:
        """A file of the review page, by its name relative to the page's folder."""
        return self.path("report", rel)

    @property
    def report_index(self) -> str:
        return self.report_file("index.html")

    @property
    def report_summary(self) -> str:
        """Written last by the report: its presence means the page is complete."""
        return self.report_file("report.json")

    @property
    def judgements_dir(self) -> str:
        """A judged run's verdict parts, one per iterations part judged."""
        return self.path("judgements")

    def judgement_part(self, name: str) -> str:
        return self.path("judgements", name)

    def eval_file(self, name: str) -> str:
        """A judged run's accuracy tables and summaries."""
        return self.path("eval", name)

    @property
    def margin_set(self) -> str:
        """A margin-set run's preference pairs; the footer holds the set's settings."""
        return self.path("dataset", "sft.parquet")

    @property
    def margin_rows(self) -> str:
        """The manifest this margin-set run derived and edits (beside the run folder)."""
        return OutLayout(posixpath.dirname(self.root)).margin_rows(self.run_id)

    @property
    def margin_set_card(self) -> str:
        return self.path("dataset", "README.md")

    def neutral_clone(self, name: str) -> str:
        """A margin set's neutral clone (engines that clone)."""
        return self.path("dataset", "neutral", name)

    @property
    def round_audio_dir(self) -> str:
        """Round audio, content-addressed (`<sha256>.flac`, written once; audio_ref.py)."""
        return self.path(ROUND_AUDIO)

    @property
    def job_json(self) -> str:
        return self.path(WORK_DIR, "job.json")

    @property
    def lease(self) -> str:
        return self.path(WORK_DIR, "lease.json")

    @property
    def plan_dir(self) -> str:
        return self.path(WORK_DIR, "plan")

    @property
    def plan_done(self) -> str:
        return self.path(WORK_DIR, "plan", "done.json")

    @property
    def reused_keys(self) -> str:
        """Planning's (row_index, finished key) of every reused row (not a shard: no `shard-`)."""
        return self.path(WORK_DIR, "plan", "reused-keys.parquet")

    @property
    def stopped(self) -> str:
        return self.path(WORK_DIR, "stopped.json")

    def quarantine(self, name: str) -> str:
        return self.path(WORK_DIR, "quarantine", name)

    def shard_plan(self, shard: int) -> str:
        return self.path(WORK_DIR, "plan", f"shard-{shard:05d}.parquet")

    def shard_results(self, shard: int) -> str:
        """Written once every item of the shard is committed: the shard's done marker."""
        return self.path(WORK_DIR, "results", f"shard-{shard:05d}.parquet")

    def plan_failures(self) -> str:
        return self.path(WORK_DIR, "results", "plan-failures.parquet")

    def plan_reused(self) -> str:
        """The reused rows' results; merge reads every table in the results folder."""
        return self.path(WORK_DIR, "results", "plan-reused.parquet")

    def results_dir(self) -> str:
        return self.path(WORK_DIR, "results")

    def iteration_part(self, shard: int, part: int) -> str:
        return self.path("iterations", f"shard-{shard:05d}-part-{part:05d}.parquet")

    def audio_path(self, clip_id: str, row_index: int, ext: str = "flac") -> str:
        # clip ids are user text: keep a readable, filesystem-safe stem plus the row for uniqueness
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", clip_id)[:80].strip("._") or "clip"
        return self.path("audio", f"{row_index:08d}-{stem}.{ext}")

    # writes ----------------------------------------------------------------
    def write_bytes(self, path: str, data: bytes) -> None:
        """Readers never see half a file (see the module docstring)."""
        retrying(lambda: self._write_once(path, data), f"writing {self.uri(path)}")

    def _write_once(self, path: str, data: bytes) -> None:
        parent = posixpath.dirname(path)
        if self.protocol in LOCAL:
            self.fs.makedirs(parent, exist_ok=True)
            name = posixpath.basename(path)
            tmp = posixpath.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
            try:
                with self.fs.open(tmp, "wb") as handle:
                    handle.write(data)
                self.fs.mv(tmp, path)
            except BaseException:
                # a failed write (disk full) leaves nothing behind, not even its temporary
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
        else:
            with self.fs.open(path, "wb") as handle:
                handle.write(data)

    def copy_object(self, source: str, path: str) -> None:
        """An object of this store (`source`, a URI) copied to `path`, readers never seeing
        half of it: on an object store a server-side copy (the bytes never pass through this
        process); on local disk a copy under a temporary name, renamed. Not a hard link: a
        delivered file edited in place would alter the round's audited object with it."""
        _, src = fsspec.core.url_to_fs(source)

        def once() -> None:
            if self.protocol not in LOCAL:
                self.fs.copy(src, path)
                return
            parent = posixpath.dirname(path)
            self.fs.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex}")
            try:
                with self.fs.open(src, "rb") as reader, self.fs.open(tmp, "wb") as writer:
                    shutil.copyfileobj(reader, writer, 1 << 20)  # in chunks, never whole
                self.fs.mv(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise

        retrying(once, f"copying {source} to {self.uri(path)}")

    def put_file(self, local: str, path: str) -> None:
        """A local file written to `path` in chunks (never whole in memory), readers never
        seeing half of it (an object store's upload is whole or nothing)."""
        if self.protocol in LOCAL:
            self.copy_object(local, path)
            return
        retrying(lambda: self.fs.put_file(local, path), f"uploading {local} to {self.uri(path)}")

    def write_table(
        self, path: str, table: pa.Table, metadata: dict[str, str] | None = None
    ) -> None:
        """A Parquet object; `metadata` goes into the file's footer (read back cheaply)."""
        self.write_bytes(path, table_bytes(table, metadata))

    def write_json(self, path: str, payload: dict[str, Any]) -> None:
        self.write_bytes(path, (json.dumps(payload, indent=2, default=str) + "\n").encode())

    # reads -----------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        return retrying(lambda: self.fs.cat_file(path), f"reading {self.uri(path)}")

    def read_table(self, path: str, columns: list[str] | None = None) -> pa.Table:
        data = self.read_bytes(path)
        return pq.read_table(io.BytesIO(data), columns=columns)

    def read_metadata(self, path: str) -> dict[str, str]:
        """The key-value metadata in a Parquet object's footer (only the footer is read)."""

        def read() -> dict[str, str]:
            with self.fs.open(path, "rb") as handle:
                meta = pq.ParquetFile(handle).schema_arrow.metadata or {}
            return {k.decode(): v.decode() for k, v in meta.items()}

        return retrying(read, f"reading the footer of {self.uri(path)}")

    def read_json(self, path: str) -> dict[str, Any]:
        return json.loads(self.read_bytes(path))

    def exists(self, path: str) -> bool:
        return retrying(lambda: self.fs.exists(path), f"looking up {self.uri(path)}")

    def list(self, directory: str, prefix: str = "", suffix: str = ".parquet") -> list[str]:
        """Objects directly in `directory` whose names start with `prefix` (fresh listing)."""
        return list_objects(self.fs, directory, prefix, suffix)

    def remove(self, paths: list[str]) -> None:
        for path in paths:
            retrying(lambda p=path: self.fs.rm(p), f"removing {self.uri(path)}")

    def remove_temporaries(self) -> int:
        """Remove the temporaries that crashed local writes left (call it holding the lease: no
        other writer is alive then); returns how many. Object stores never leave any."""
        if self.protocol not in LOCAL:
            return 0
        folders = (self.root, self.iterations_dir, self.audio_dir, self.round_audio_dir,
                   self.audit_dir, self.work_dir, self.plan_dir, self.results_dir())  # fmt: skip
        found = [p for d in folders for p in self.list(d, suffix="") if is_temporary(p)]
        self.remove(found)
        return len(found)

    def clear_outputs(self) -> None:
        """Remove what a run writes, so the run id starts afresh (`--overwrite`): the run's own
        objects, found by their names, and nothing else a user may have put in the folder. The
        lease and the folder's marker stay: the attempt clearing it holds the lease."""
        for path in (self.manifest, self.run_json, self.run_json_seal):
            if self.exists(path):
                self.remove([path])
        for name, pattern in RUN_OBJECTS.items():
            for path in self.list(self.path(name), suffix=""):
                if pattern.match(posixpath.basename(path)):
                    retrying(lambda p=path: self.fs.rm(p, recursive=True), f"removing {path}")
        for path in self.list(self.work_dir, suffix=""):
            if path not in (self.lease, self.logs_dir):
                retrying(lambda p=path: self.fs.rm(p, recursive=True), f"removing {path}")


def table_bytes(table: pa.Table, metadata: dict[str, str] | None = None) -> bytes:
    """A Parquet object's bytes; `metadata` goes into its footer."""
    if metadata:
        merged = {
            **(table.schema.metadata or {}),
            **{k.encode(): v.encode() for k, v in metadata.items()},
        }
        table = table.replace_schema_metadata(merged)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


TMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{32}$")  # a local write's temporary name


def is_temporary(path: str) -> bool:
    """A local write's temporary name (a crash may leave one): never a run's object."""
    return bool(TMP_NAME.match(posixpath.basename(path.rstrip("/"))))


# folder -> the names a run writes in it (what `clear_outputs` removes)
RUN_OBJECTS = {
    "iterations": re.compile(r"^(shard-\d{5}-part-\d{5}\.parquet|\..+\.tmp-[0-9a-f]{32})$"),
    "audio": re.compile(r"^(\d{8}-[A-Za-z0-9._-]*\.flac|\..+\.tmp-[0-9a-f]{32})$"),
    "round-audio": re.compile(r"^([0-9a-f]{64}\.flac|\..+\.tmp-[0-9a-f]{32})$"),
    "report": re.compile(r".*"),  # the review page's folder is the run's alone
    "audit": re.compile(r"^(records\.parquet|\..+\.tmp-[0-9a-f]{32})$"),
}


class OutLayout:
    """What lives under an output root beside its run folders: each run's run.json, and the
    `_index/` that incremental runs look up (incremental.py)."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.index_dir = posixpath.join(self.root, INDEX_DIR)

    def run_json(self, run_id: str) -> str:
        return posixpath.join(self.root, run_id, RUN_JSON)

    def margin_rows(self, run_id: str) -> str:
        """The derived manifest a margin-set run edits: beside its run folder, never inside
        it (a run never holds its own inputs)."""
        return posixpath.join(self.root, DATASETS_DIR, run_id, "rows.parquet")

    def index_folder(self, kind: str) -> str:
        return posixpath.join(self.index_dir, kind)

    def index_file(self, kind: str, run_id: str) -> str:
        """One run's file of an index kind (`finished`, `sources`)."""
        return posixpath.join(self.index_dir, kind, f"{run_id}.parquet")
