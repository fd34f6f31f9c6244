"""Nothing unverified is trusted: a resumed attempt checks the committed parts it builds on, and a
run checks every delivered file against its record before it is called finished.

A part is intact when it decodes, its footer counts its records, every record hashes to its
`record_sha256` and every round's audio to its `output_sha256`: the object a record references
(`round-audio/<sha256>.flac`) is read back in chunks and hashed. A damaged part (a flipped bit, a
truncated upload, a referenced object missing or altered) is moved into the run's quarantine,
`_work/quarantine/`, with a note in `_work/job.json`, and so is an altered object (its name would
otherwise stop the redo from publishing it again); the part's clip-rounds are then simply not
committed, so the attempt does them again.
A delivered file that does not hash to its round's `output_sha256`, or is missing, is written
again from the (verified) record; a row delivered as other files (`delivered_files`: another
format, or parts of a long clip) has each file checked against the sha256 the manifest lists, and
the files are made again from the record's FLAC when one is missing or altered.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa

from stepedit_core.audit.records import object_sha256, record_digest, run_relative
from stepedit_core.catalog.records import RowResult, round_flac
from stepedit_core.foundation.audio_ref import resolve_ref, sha256_file
from stepedit_core.foundation.retry import retrying
from stepedit_core.foundation.store import RunStore
from stepedit_core.quality.delivery import QcPlan

RESULTS_KEY = "stepedit.results"  # row results in a part's footer
RECORDS_KEY = "stepedit.records"  # clip-rounds in a part
_READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError, KeyError, TypeError)


class DamagedPart(Exception):
    """A committed part that can not be trusted; the message says what is wrong."""


@dataclass
class CheckedPart:
    path: str
    results: list[RowResult]  # the row results of the items the part finished
    records: int


def check_part(store: RunStore, path: str) -> CheckedPart:
    """Read a whole part and check it (DamagedPart says why it can not be trusted)."""
    try:
        table = store.read_table(path)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        results = [RowResult.from_row(r) for r in json.loads(meta.get(RESULTS_KEY, "[]"))]
        claimed = int(meta.get(RECORDS_KEY, "-1"))
    except _READ_ERRORS as exc:
        raise DamagedPart(f"unreadable: {type(exc).__name__}: {exc}") from None
    if claimed != table.num_rows:
        raise DamagedPart(f"its footer counts {claimed} record(s), it holds {table.num_rows}")
    sealed = "record_sha256" in table.column_names  # parts written before records were sealed
    for record in table.to_pylist():
        label = f"clip {record.get('clip_id')!r} round {record.get('iteration')}"
        flac = record.get("audio_flac")
        if flac is not None and hashlib.sha256(flac).hexdigest() != record.get("output_sha256"):
            raise DamagedPart(f"{label}: audio_flac does not hash to output_sha256")
        if record.get("audio_ref"):
            _check_object(store, record, label)
        if sealed and record_digest(record) != record.get("record_sha256"):
            raise DamagedPart(f"{label}: fields do not hash to record_sha256")
    committed = set(table.column("row_index").to_pylist())
    strays = [r.row_index for r in results if r.rounds_done and r.row_index not in committed]
    if strays:
        raise DamagedPart(f"row results for rows {strays[:5]} with no record in the part")
    return CheckedPart(path, results, table.num_rows)


def _check_object(store: RunStore, record: dict[str, Any], label: str) -> None:
    """The round's referenced object is there and hashes to the record's output_sha256; an
    altered one is quarantined too (see the module docstring)."""
    uri = resolve_ref(record["audio_ref"], store.run_uri)
    try:
        digest = sha256_file(uri)
    except FileNotFoundError:
        raise DamagedPart(f"{label}: its audio object {uri} is missing") from None
    if digest != record.get("output_sha256"):
        _, path = fsspec.core.url_to_fs(uri)
        quarantine(store, path, f"{label}: does not hash to output_sha256")
        raise DamagedPart(f"{label}: its audio object {uri} does not hash to output_sha256")


def shard_results_records(store: RunStore, shard: int) -> int | None:
    """The clip-rounds a done shard's results object counts, after reading it whole (merge
    relies on it); None when it is damaged: it is then quarantined and the shard, rebuilt from
    its parts, is closed again."""
    path = store.shard_results(shard)
    try:
        table = store.read_table(path)
        table.cast(RowResult.SCHEMA)  # what merge does with it
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return int(meta[RECORDS_KEY])
    except _READ_ERRORS as exc:
        quarantine(store, path, f"unreadable: {type(exc).__name__}: {exc}")
        return None


def quarantine(store: RunStore, path: str, problem: str) -> str:
    """Move a damaged part out of `iterations/` into `_work/quarantine/` and note it in
    job.json; returns where it went."""
    name = f"{time.strftime('%Y%m%dT%H%M%S')}-{posixpath.basename(path)}"
    target = store.quarantine(name)
    store.fs.makedirs(posixpath.dirname(target), exist_ok=True)
    retrying(lambda: store.fs.mv(path, target), f"moving {store.uri(path)} to quarantine")
    note_in_job(
        store,
        "quarantined",
        {
            "object": run_relative(store, path),
            "moved_to": run_relative(store, target),
            "problem": problem,
            "at": time.time(),
        },
    )
    return target


def note_in_job(store: RunStore, key: str, *notes: dict[str, Any]) -> None:
    """Append notes to a list in `_work/job.json` (kept across attempts by `begin`)."""
    job = store.read_json(store.job_json) if store.exists(store.job_json) else {}
    job[key] = [*job.get(key, []), *notes]
    store.write_json(store.job_json, job)


def check_deliveries(store: RunStore, qc_plan: QcPlan | None = None) -> int:
    """Every ok row of the merged manifest (edited in this run) has its delivered file, byte for
    byte its delivered round's FLAC (or, with `delivered_files`, the files listed there); a
    missing or altered file is written again from the record. Returns how many were written
    again; raises when a record can not supply one."""
    manifest = store.read_table(store.manifest)
    columns = ["clip_id", "status", "selected_round", "reused_from_run", "delivered_files"]
    rows = manifest.select([c for c in columns if c in manifest.column_names]).to_pylist()
    wanted = {
        index: row
        for index, row in enumerate(rows)
        if row["status"] == "ok" and not row.get("reused_from_run")
    }
    rounds: dict[int, dict[int, tuple[str, str]]] = {}  # row -> round -> (sha256, part)
    for part in store.list(store.iterations_dir):
        table = store.read_table(part, ["row_index", "iteration", "status", "output_sha256"])
        for rec in table.to_pylist():
            if rec["row_index"] in wanted and rec["status"] == "ok" and rec["output_sha256"]:
                rounds.setdefault(rec["row_index"], {})[rec["iteration"]] = (
                    rec["output_sha256"],
                    part,
                )
    repaired: list[dict[str, Any]] = []
    for index, row in wanted.items():
        found = rounds.get(index)
        if not found:
            raise RuntimeError(f"row {index} (clip {row['clip_id']!r}) is ok but has no record")
        chosen = row.get("selected_round")
        chosen = chosen if chosen is not None else max(found)
        expected, part = found[chosen]
        if row.get("delivered_files"):
            for path in _check_packaged(store, qc_plan, row, index, part, chosen, expected):
                repaired.append(
                    {"object": run_relative(store, path), "from": run_relative(store, part)}
                )
            continue
        path = store.audio_path(str(row["clip_id"]), index)
        if store.exists(path) and object_sha256(store, path) == expected:
            continue
        _redeliver(store, part, index, chosen, expected, path)
        repaired.append({"object": run_relative(store, path), "from": run_relative(store, part)})
    if repaired:
        note_in_job(store, "redelivered", *repaired)
    return len(repaired)


def _check_packaged(
    store: RunStore,
    qc_plan: QcPlan | None,
    row: dict[str, Any],
    index: int,
    part: str,
    iteration: int,
    expected: str,
) -> list[str]:
    """The files a row is delivered as, each against the sha256 the manifest lists; when one
    is missing or altered, all are made again from the round's FLAC (packaging is
    deterministic). Returns the paths written again."""
    listed = {
        store.delivered_file(f["uri"]): f["sha256"] for f in json.loads(row["delivered_files"])
    }
    bad = [p for p, sha in listed.items() if not store.exists(p) or object_sha256(store, p) != sha]
    if not bad:
        return []
    if qc_plan is None:
        raise RuntimeError(f"row {index}: delivered files {bad} do not match the manifest")
    from stepedit_core.quality.delivered_files import package

    clip = str(row["clip_id"])

    def path_for(ext: str, number: int | None) -> str:
        return store.audio_path(clip, index, ext if number is None else f"part{number:02d}.{ext}")

    flac = _record_flac(store, part, index, iteration, expected)
    remade = {f.path: f for f in package(flac, path_for, qc_plan, None, False).files}
    for path in bad:
        made = remade.get(path)
        if made is None or made.sha256 != listed[path]:
            raise RuntimeError(
                f"row {index}: {run_relative(store, path)} can not be made again byte for byte "
                "from its record; run `stepedit verify`"
            )
        store.write_bytes(path, made.data)
    return bad


def _record_flac(store: RunStore, part: str, row: int, iteration: int, expected: str) -> bytes:
    for rec in store.read_table(part).to_pylist():
        if rec["row_index"] == row and rec["iteration"] == iteration:
            try:
                flac = round_flac(rec, store.run_uri) or b""
            except FileNotFoundError:
                break
            if hashlib.sha256(flac).hexdigest() == expected:
                return flac
            break
    raise RuntimeError(
        f"row {row} round {iteration}: {run_relative(store, part)} can not supply the delivered "
        "file (its audio does not match the record); run `stepedit verify`"
    )


def _redeliver(
    store: RunStore, part: str, row: int, iteration: int, expected: str, path: str
) -> None:
    store.write_bytes(path, _record_flac(store, part, row, iteration, expected))
