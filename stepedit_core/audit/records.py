"""Sealing: each round record's hash, the chain between a clip's records, the run digest,
the records index and run.json's seal."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.foundation.store import RunStore

AUDIT_KEY_ENV = "STEPEDIT_AUDIT_KEY"  # set: run.json's seal is an HMAC with this key
RECORD_HASH_VERSION = b"stepedit-record-v1\n"
RUN_HASH_VERSION = b"stepedit-run-v1\n"
# not part of a record's hash: the hash itself, and the audio, covered through output_sha256
UNHASHED_FIELDS = frozenset({"record_sha256", "audio_flac"})
INDEX_ROW_GROUP = 4096  # index rows per row group: one clip's lookup reads one small group
INDEX_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("row_index", pa.int64()),
        ("iteration", pa.int32()),
        ("record_sha256", pa.string()),
        ("part", pa.string()),  # path relative to the run folder
        ("row_group", pa.int32()),
        ("row", pa.int32()),  # row inside that row group
    ]
)
# a record column, True on the round whose audio was delivered (`--select best`); without it,
# or where no record sets it, the last round is the delivered one
SELECTED_FIELD = "selected"


class AuditError(ValueError):
    """A record can not be sealed (its audio does not match its output hash)."""


# --------------------------------------------------------------------------- records


def _canonical(value: Any) -> Any:
    """A JSON-safe value that is the same before and after an Arrow round trip: integral
    floats become ints (a float64 column may read back 2.0 for the 2 it was given), non-finite
    floats become strings, bytes become their sha256, numpy scalars become Python values."""
    if hasattr(value, "item") and not isinstance(value, (bytes, str)):
        value = value.item() if getattr(value, "ndim", 0) == 0 else value.tolist()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    raise TypeError(f"can not hash a record field of type {type(value).__name__}")


def record_digest(record: dict[str, Any]) -> str:
    """sha256 over every field except `record_sha256` and the audio bytes. A field that is None
    is left out, so a column added to the schema later (null in old records) changes nothing."""
    fields = {
        k: _canonical(v) for k, v in record.items() if k not in UNHASHED_FIELDS and v is not None
    }
    payload = json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(RECORD_HASH_VERSION + payload.encode()).hexdigest()


def seal(record: dict[str, Any], prev_record_sha256: str) -> dict[str, Any]:
    """The record with `prev_record_sha256` (the previous round's record hash; for a clip's
    first round, the source file's sha256) and its own `record_sha256`. Call it last: any
    field set afterwards breaks the seal. Values must come back from Parquet unchanged (float64,
    ints, strings, lists of those); a float32 column would round a Python float."""
    flac = record.get("audio_flac")
    if flac is not None and hashlib.sha256(flac).hexdigest() != record.get("output_sha256"):
        raise AuditError(
            f"clip {record.get('clip_id')!r} round {record.get('iteration')}: "
            "output_sha256 does not match the record's audio bytes"
        )
    sealed = dict(record, prev_record_sha256=prev_record_sha256)
    sealed.pop("record_sha256", None)
    sealed["record_sha256"] = record_digest(sealed)
    return sealed


# --------------------------------------------------------------------------- run level


def run_relative(store: RunStore, path: str) -> str:
    return posixpath.relpath(path, store.root)


def object_sha256(store: RunStore, path: str) -> str:
    digest = hashlib.sha256()
    with store.fs.open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_digest(records: Iterable[tuple[int, int, str]], input_manifest_sha256: str) -> str:
    """sha256 over (row_index, iteration, record_sha256) in that order, plus the input
    manifest's sha256: adding, dropping or changing any record changes it."""
    digest = hashlib.sha256(RUN_HASH_VERSION)
    digest.update(f"input_manifest {input_manifest_sha256}\n".encode())
    for row_index, iteration, record_sha in sorted(records):
        digest.update(f"{row_index} {iteration} {record_sha}\n".encode())
    return digest.hexdigest()


def _part_locations(store: RunStore, part: str) -> Iterator[dict[str, Any]]:
    with store.fs.open(part, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        for group in range(parquet.num_row_groups):
            rows = parquet.read_row_group(
                group, columns=["clip_id", "row_index", "iteration", "record_sha256"]
            ).to_pylist()
            for row_in_group, row in enumerate(rows):
                yield dict(row, part=run_relative(store, part), row_group=group, row=row_in_group)


def build_index(store: RunStore) -> pa.Table:
    """Where every record lives, sorted by clip id. Reads only four small columns per part."""
    rows = [
        loc for part in store.list(store.iterations_dir) for loc in _part_locations(store, part)
    ]
    table = pa.Table.from_pylist(rows, INDEX_SCHEMA)
    return table.sort_by(
        [("clip_id", "ascending"), ("row_index", "ascending"), ("iteration", "ascending")]
    )


def run_audit(store: RunStore, input_manifest_sha256: str) -> dict[str, Any]:
    """Write the records index and return the `audit` section of run.json. Call it after the
    output manifest is merged and before run.json is written."""
    index = build_index(store)
    sink = pa.BufferOutputStream()
    pq.write_table(index, sink, compression="zstd", row_group_size=INDEX_ROW_GROUP)
    store.write_bytes(store.audit_index, sink.getvalue().to_pybytes())
    links = zip(
        index.column("row_index").to_pylist(),
        index.column("iteration").to_pylist(),
        index.column("record_sha256").to_pylist(),
        strict=True,
    )
    return {
        "algorithm": "sha256",
        "run_digest": run_digest(((r, i, h or "") for r, i, h in links), input_manifest_sha256),
        "records": index.num_rows,
        "input_manifest_sha256": input_manifest_sha256,
        "output_manifest_sha256": object_sha256(store, store.manifest)
        if store.exists(store.manifest)
        else None,
        "index": run_relative(store, store.audit_index),
        "index_sha256": object_sha256(store, store.audit_index),
        "run_json_seal": run_relative(store, store.run_json_seal),
        **run_verdicts_section(store),
    }


RUN_VERDICTS = ""  # the group of the verdicts a run made while editing (parts named shard-*)


def verdict_group(part: str) -> str:
    """Whose verdicts a part holds: `<judge id>-shard-...` (stepedit judge) or `shard-...`."""
    name = posixpath.basename(part)
    return name.split("-shard-", 1)[0] if "-shard-" in name else RUN_VERDICTS


def verdict_groups(store: RunStore) -> dict[str, list[str]]:
    """Record hashes of the verdicts, by group (reads one column of each part)."""
    groups: dict[str, list[str]] = {}
    for part in store.list(store.judgements_dir):
        hashes = store.read_table(part, ["record_sha256"]).column(0).to_pylist()
        groups.setdefault(verdict_group(part), []).extend(h or "" for h in hashes)
    return groups


def run_verdicts_section(store: RunStore) -> dict[str, Any]:
    """The digest over the verdicts a run made while editing (`--judge`), so that a verdict part
    deleted later is noticed; nothing when the run was not judged."""
    hashes = verdict_groups(store).get(RUN_VERDICTS)
    if hashes is None:
        return {}
    return {"verdicts": len(hashes), "verdicts_digest": verdicts_digest(hashes)}


def verdicts_digest(record_hashes: list[str]) -> str:
    """sha256 over a set of verdicts' record hashes (order does not matter)."""
    digest = hashlib.sha256(b"stepedit-judgements-v1\n")
    for value in sorted(record_hashes):
        digest.update(f"{value}\n".encode())
    return digest.hexdigest()


def audit_key() -> bytes | None:
    key = os.environ.get(AUDIT_KEY_ENV)
    return key.encode() if key else None


def seal_line(data: bytes, key: bytes | None) -> str:
    """`<sha256>  run.json` (sha256sum format), or `hmac-sha256:<hex>  run.json` with a key."""
    if key is None:
        return f"{hashlib.sha256(data).hexdigest()}  run.json\n"
    return f"hmac-sha256:{hmac.new(key, data, hashlib.sha256).hexdigest()}  run.json\n"


def write_sealed_run_json(store: RunStore, record: dict[str, Any]) -> None:
    """Write run.json and `run.json.sha256` beside it. Without a key the seal is the file's
    sha256 (`sha256sum -c run.json.sha256` checks it in the run folder); with
    $STEPEDIT_AUDIT_KEY set it is an HMAC, which nobody without the key can recompute after an
    edit, so run.json, and through its run digest every record and audio file, is signed.
    The seal is written second: a crash leaves an unsealed run.json, which verify reports."""
    data = (json.dumps(record, indent=2, default=str) + "\n").encode()
    store.write_bytes(store.run_json, data)
    store.write_bytes(store.run_json_seal, seal_line(data, audit_key()).encode())


def split_run_uri(run: str) -> tuple[str, str]:
    """(out, run_id) of a run folder given as one path or URI (`runs/nightly-01`,
    `s3://bucket/runs/nightly-01`)."""
    cleaned = run.rstrip("/")
    if "/" not in cleaned:
        return ".", cleaned
    out, run_id = cleaned.rsplit("/", 1)
    if out.endswith(":/"):  # s3://bucket/run-id: keep the protocol's double slash
        out += "/"
    return out or "/", run_id
