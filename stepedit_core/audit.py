"""An audit trail you can check: hash-chained round records, a run digest, a sealed run.json.

What covers what (each arrow: "its hash is stored in"):

    round audio (audio_flac) -> record.output_sha256
    every other record field -> record.record_sha256 -> next round's prev_record_sha256
    source file bytes        -> round 1's input_sha256 and prev_record_sha256
    all record_sha256 values + input manifest sha256 -> run.json "audit.run_digest"
    records index, output manifest                   -> run.json "audit"
    run.json bytes                                   -> run.json.sha256 (sha256sum format,
                                                        or an HMAC with $STEPEDIT_AUDIT_KEY)

`verify_run` recomputes every arrow and names each clip and object where one does not hold.
Without a key the hashes prove that nothing changed by accident or by a careless edit; someone
who rewrites a record and every hash after it, run.json's seal included, goes unnoticed unless
the run digest was kept elsewhere (a ticket, the Prefect artifact). With $STEPEDIT_AUDIT_KEY
set when the run is written and verified, the seal is an HMAC and such a rewrite needs the key.

`clip_history` answers from `audit/records.parquet`, an index sorted by clip id (clip -> part
file, row group, row), so one clip costs one index row group and one part row group, not a scan.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import posixpath
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.store import RunStore

AUDIT_KEY_ENV = "STEPEDIT_AUDIT_KEY"  # set: run.json's seal is an HMAC with this key
RECORD_HASH_VERSION = b"stepedit-record-v1\n"
RUN_HASH_VERSION = b"stepedit-run-v1\n"
# not part of a record's hash: the hash itself, and the audio, covered through output_sha256
UNHASHED_FIELDS = frozenset({"record_sha256", "audio_flac"})
# too bulky to print in a clip's history; their presence is still covered by record_sha256
BULKY_FIELDS = frozenset({"audio_flac", "input_tokens", "output_tokens"})
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
# what verify_run keeps of each record once it is re-hashed: enough to check the chains
_LINK_FIELDS = (
    SELECTED_FIELD,
    "clip_id",
    "row_index",
    "iteration",
    "status",
    "input_sha256",
    "output_sha256",
    "prev_record_sha256",
    "record_sha256",
)


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


def index_path(store: RunStore) -> str:
    return store.path("audit", "records.parquet")


def run_json_seal_path(store: RunStore) -> str:
    return store.run_json + ".sha256"


def _rel(store: RunStore, path: str) -> str:
    return posixpath.relpath(path, store.root)


def _bytes_sha256(store: RunStore, path: str) -> str:
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
                yield dict(row, part=_rel(store, part), row_group=group, row=row_in_group)


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
    store.write_bytes(index_path(store), sink.getvalue().to_pybytes())
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
        "output_manifest_sha256": _bytes_sha256(store, store.manifest)
        if store.exists(store.manifest)
        else None,
        "index": _rel(store, index_path(store)),
        "index_sha256": _bytes_sha256(store, index_path(store)),
        "run_json_seal": _rel(store, run_json_seal_path(store)),
    }


def _audit_key() -> bytes | None:
    key = os.environ.get(AUDIT_KEY_ENV)
    return key.encode() if key else None


def _seal_text(data: bytes, key: bytes | None) -> str:
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
    store.write_bytes(run_json_seal_path(store), _seal_text(data, _audit_key()).encode())


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


# --------------------------------------------------------------------------- clip history


def _find_in_index(store: RunStore, clip_id: str) -> list[dict[str, Any]]:
    path = index_path(store)
    if not store.exists(path):
        return []
    table = pq.read_table(path, filesystem=store.fs, filters=[("clip_id", "==", clip_id)])
    return table.to_pylist()


def _manifest_rows(store: RunStore, clip_id: str, row_indexes: set[int]) -> list[dict[str, Any]]:
    """Output manifest rows of a clip, reading only the row groups that can hold them."""
    if not store.exists(store.manifest):
        return []
    wanted = (
        "clip_id",
        "audio_uri",
        "status",
        "output_uri",
        "error",
        "error_code",
        "iterations_done",
    )
    with store.fs.open(store.manifest, "rb") as handle:
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
        columns = [c for c in wanted if c in names]
        found: list[dict[str, Any]] = []
        start = 0
        for group in range(parquet.num_row_groups):
            n = parquet.metadata.row_group(group).num_rows
            rows = range(start, start + n)
            # a clip with no records (failed before round 1) is not in the index: scan for it
            if not row_indexes or any(r in rows for r in row_indexes):
                table = parquet.read_row_group(group, columns=columns).to_pylist()
                for offset, row in enumerate(table):
                    if (start + offset in row_indexes) or row.get("clip_id") == clip_id:
                        found.append(dict(row, row_index=start + offset))
            start += n
        return found


def _read_record(store: RunStore, loc: dict[str, Any], cache: dict) -> dict[str, Any]:
    key = (loc["part"], loc["row_group"])
    if key not in cache:
        with store.fs.open(store.path(loc["part"]), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            columns = [c for c in parquet.schema_arrow.names if c != "audio_flac"]
            cache[key] = parquet.read_row_group(loc["row_group"], columns=columns)
    table = cache[key]
    return table.slice(loc["row"], 1).to_pylist()[0]


def clip_history(out: str, run_id: str, clip_id: str, check_delivered: bool = True) -> dict | None:
    """One clip's chain: source -> round 1 -> ... -> delivered file, with hashes, instructions,
    metrics and QC fields (every record column except the audio and token lists), and whether
    each link holds. None when the run has no such clip."""
    started = time.perf_counter()
    store = RunStore(out, run_id)
    store.fs.invalidate_cache()  # object stores: answer from the objects as they are now
    locations = _find_in_index(store, clip_id)
    manifest = _manifest_rows(store, clip_id, {loc["row_index"] for loc in locations})
    if not locations and not manifest:
        return None
    cache: dict = {}
    rounds: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for loc in sorted(locations, key=lambda r: (r["row_index"], r["iteration"])):
        record = _read_record(store, loc, cache)
        rounds.append(_round_view(record, previous, loc))
        previous = record
    source_sha = rounds[0]["input_sha256"] if rounds else None
    final = _final_view(store, manifest, rounds, check_delivered)
    audio_uri = next((r.get("audio_uri") for r in manifest if r.get("audio_uri")), None)
    return {
        "run": store.uri(store.root),
        "clip_id": clip_id,
        "source": {"audio_uri": audio_uri, "sha256": source_sha},
        "rounds": rounds,
        "final": final,
        "intact": all(r["record_ok"] and r["links_ok"] for r in rounds)
        and final.get("delivered_ok") is not False,
        "lookup_seconds": round(time.perf_counter() - started, 4),
    }


def _round_view(record: dict, previous: dict | None, loc: dict) -> dict[str, Any]:
    view = {k: v for k, v in record.items() if k not in BULKY_FIELDS}
    for name in ("input_tokens", "output_tokens"):
        if record.get(name) is not None:
            view[f"{name}_count"] = len(record[name])
    view["record_ok"] = record_digest(record) == record.get("record_sha256")
    if previous is None:
        expected_prev = record.get("input_sha256")
        links = record.get("prev_record_sha256") == expected_prev
    else:
        links = (
            record.get("input_sha256") == previous.get("output_sha256")
            and record.get("prev_record_sha256") == previous.get("record_sha256")
            and record.get("iteration") == previous.get("iteration") + 1
        )
    view["links_ok"] = bool(links)
    view["stored_in"] = f"{loc['part']}#rg{loc['row_group']}:{loc['row']}"
    return view


def delivered_round(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The record whose audio is the delivered file: the one marked selected, else the last."""
    marked = [r for r in records if r.get(SELECTED_FIELD)]
    return marked[-1] if marked else (records[-1] if records else {})


def _final_view(
    store: RunStore, manifest: list[dict], rounds: list[dict], check_delivered: bool
) -> dict[str, Any]:
    row = next((r for r in manifest if r.get("status") == "ok"), manifest[0] if manifest else {})
    final: dict[str, Any] = {
        k: row.get(k)
        for k in ("row_index", "status", "output_uri", "error_code", "error", "iterations_done")
    }
    if row.get("status") == "ok" and rounds:
        path = store.audio_path(row["clip_id"], row["row_index"])
        final["delivered"] = store.uri(path)
        final["expected_sha256"] = delivered_round(rounds).get("output_sha256")
        if check_delivered:
            actual = _bytes_sha256(store, path) if store.exists(path) else None
            final["sha256"] = actual
            final["delivered_ok"] = actual == final["expected_sha256"]
    return final


def format_history(history: dict[str, Any]) -> str:
    """The chain as text, one block per step."""
    lines = [f"clip {history['clip_id']} in {history['run']}"]
    src = history["source"]
    lines.append(f"  source   {src['audio_uri']}")
    lines.append(f"           sha256 {src['sha256']}")
    for r in history["rounds"]:
        mark = "ok" if r["record_ok"] and r["links_ok"] else "MISMATCH"
        lines.append(
            f"  round {r['iteration']}  {r.get('edit')}  [{r.get('status')}]  chain {mark}"
        )
        if r.get("instruction"):
            lines.append(f"           instruction {r['instruction']!r}")
        lines.append(f"           engine {r.get('engine')} {r.get('engine_version')}")
        if r.get("model_fingerprint"):
            lines.append(f"           model {r['model_fingerprint']}")
        lines.append(f"           input  {r.get('input_sha256')}")
        lines.append(f"           output {r.get('output_sha256')}")
        lines.append(f"           record {r.get('record_sha256')}")
        lines.append(f"           prev   {r.get('prev_record_sha256')}")
        metrics = _metric_fields(r)
        if metrics:
            lines.append("           " + "  ".join(f"{k}={v}" for k, v in metrics.items()))
        if r.get("error_code"):
            lines.append(f"           error {r['error_code']}: {r.get('error')}")
    final = history["final"]
    lines.append(f"  final    [{final.get('status')}]  {final.get('delivered') or ''}".rstrip())
    if "sha256" in final:
        verdict = "matches the delivered round" if final.get("delivered_ok") else "MISMATCH"
        lines.append(f"           sha256 {final['sha256']}  {verdict}")
    if final.get("error_code"):
        lines.append(f"           error {final['error_code']}: {final.get('error')}")
    lines.append(f"  chain {'intact' if history['intact'] else 'BROKEN'}")
    return "\n".join(lines) + "\n"


_NOT_METRICS = frozenset(
    {"row_index", "iteration", "seed", "sample_rate", "channels", "input_tokens_count"}
    | {"output_tokens_count", "record_ok", "links_ok"}
)


def _metric_fields(view: dict[str, Any]) -> dict[str, Any]:
    """Numbers and QC verdicts of a round: every numeric or qc_* field that is set."""
    return {
        k: v
        for k, v in view.items()
        if v is not None
        and k not in _NOT_METRICS
        and (k.startswith("qc") or (isinstance(v, (int, float)) and not isinstance(v, bool)))
    }


# --------------------------------------------------------------------------- verify


@dataclass
class Mismatch:
    kind: str  # what failed, e.g. record_altered, chain_broken, delivered_altered
    object: str  # the file (relative to the run folder) where it was found
    clip_id: str | None = None
    detail: str = ""

    def line(self) -> str:
        clip = f" clip {self.clip_id!r}" if self.clip_id is not None else ""
        return f"{self.kind}:{clip} {self.object}: {self.detail}".rstrip(": ")


@dataclass
class VerifyReport:
    run: str
    run_digest: str | None = None
    checked: dict[str, int] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.mismatches

    def add(self, kind: str, obj: str, clip_id: str | None = None, detail: str = "") -> None:
        self.mismatches.append(Mismatch(kind, obj, clip_id, detail))

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), intact=self.intact)

    def text(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.checked.items())
        if self.intact:
            return f"{self.run}: intact ({counts}); run digest {self.run_digest}\n"
        lines = [f"{self.run}: {len(self.mismatches)} mismatch(es) ({counts})"]
        lines += [f"  {m.line()}" for m in self.mismatches]
        return "\n".join(lines) + "\n"


_READ_ERRORS = (pa.ArrowException, OSError, ValueError, EOFError)


def _check_run_json(store: RunStore, report: VerifyReport) -> dict[str, Any]:
    try:
        with store.fs.open(store.run_json, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        report.add("run_json_missing", "run.json", detail="no run.json: the run never finished")
        return {}
    seal_path = run_json_seal_path(store)
    if not store.exists(seal_path):
        report.add("run_json_unsealed", "run.json", detail="run.json.sha256 is missing")
    else:
        with store.fs.open(seal_path, "rb") as handle:
            sealed = (handle.read().decode(errors="replace").split() or ["(empty)"])[0]
        keyed = sealed.startswith("hmac-sha256:")
        key = _audit_key()
        if keyed and key is None:
            report.add(
                "run_json_unverifiable",
                "run.json",
                detail=f"run.json is signed with a key: set ${AUDIT_KEY_ENV} to check it",
            )
        elif key is not None and not keyed:  # a key is expected: a plain hash is a downgrade
            report.add(
                "run_json_unsigned",
                "run.json",
                detail=f"${AUDIT_KEY_ENV} is set but run.json's seal is a plain sha256",
            )
        elif sealed != _seal_text(data, key if keyed else None).split()[0]:
            kind = "HMAC" if keyed else "sha256"
            report.add(
                "run_json_altered", "run.json", detail=f"content does not match its {kind} seal"
            )
    try:
        return json.loads(data)
    except ValueError as exc:
        report.add("run_json_unreadable", "run.json", detail=f"not JSON: {exc}")
        return {}


def _check_file_hash(
    store: RunStore, report: VerifyReport, rel: str | None, expected: str | None, kind: str
) -> bool:
    if not rel or not expected:
        report.add(kind, rel or "?", detail="run.json does not record its sha256")
        return False
    path = store.path(rel)
    if not store.exists(path):
        report.add(kind, rel, detail="missing")
        return False
    actual = _bytes_sha256(store, path)
    if actual != expected:
        report.add(kind, rel, detail=f"sha256 {actual} != recorded {expected}")
        return False
    return True


def _load_index(store: RunStore, report: VerifyReport, audit: dict) -> list[dict] | None:
    rel = audit.get("index")
    intact = _check_file_hash(store, report, rel, audit.get("index_sha256"), "index_altered")
    if rel is None or not store.exists(store.path(rel)):
        return None
    try:
        rows = store.read_table(store.path(rel)).to_pylist()
    except _READ_ERRORS as exc:
        report.add("index_unreadable", rel, detail=str(exc))
        return None
    # an altered index still names where records should be; it is not trusted for hashes
    return rows if intact else [dict(r, record_sha256=None) for r in rows]


def _read_parts(store: RunStore, report: VerifyReport, expected: dict) -> dict[tuple, dict]:
    """Every readable record (audio re-hashed, record re-hashed), by (row_index, iteration).
    A part or row group that no longer decodes is named with the clips the index puts there."""
    found: dict[tuple, dict] = {}
    parts = store.list(store.iterations_dir)
    report.checked["part files"] = len(parts)
    for part in parts:
        rel = _rel(store, part)
        with store.fs.open(part, "rb") as handle:
            try:
                parquet = pq.ParquetFile(handle)
            except _READ_ERRORS as exc:
                _unreadable(report, rel, None, exc, expected)
                continue
            for group in range(parquet.num_row_groups):
                try:
                    rows = parquet.read_row_group(group).to_pylist()
                except _READ_ERRORS as exc:
                    _unreadable(report, rel, group, exc, expected)
                    continue
                for row_in_group, record in enumerate(rows):
                    _check_record(report, rel, record)
                    key = (record.get("row_index"), record.get("iteration"))
                    if key in found:
                        report.add(
                            "record_duplicate", rel, record.get("clip_id"), f"round {key[1]}"
                        )
                    links = {k: record.get(k) for k in _LINK_FIELDS}
                    found[key] = dict(links, where=f"{rel}#rg{group}:{row_in_group}")
    return found


def _unreadable(
    report: VerifyReport, rel: str, group: int | None, exc: Exception, expected: dict
) -> None:
    clips = sorted(
        {
            str(loc["clip_id"])
            for loc in expected.values()
            if loc["part"] == rel and (group is None or loc["row_group"] == group)
        }
    )
    where = rel if group is None else f"{rel}#rg{group}"
    named = f"; records of {', '.join(clips)} lost" if clips else ""
    report.add("part_unreadable", where, None, f"{type(exc).__name__}: {exc}{named}")


def _check_record(report: VerifyReport, rel: str, record: dict) -> None:
    clip = record.get("clip_id")
    label = f"round {record.get('iteration')}"
    flac = record.get("audio_flac")
    if flac is not None and hashlib.sha256(flac).hexdigest() != record.get("output_sha256"):
        report.add(
            "audio_altered", rel, clip, f"{label}: audio_flac does not hash to output_sha256"
        )
    if flac is None and record.get("output_sha256"):
        report.add("audio_missing", rel, clip, f"{label}: output_sha256 set but no audio_flac")
    if record_digest(record) != record.get("record_sha256"):
        report.add("record_altered", rel, clip, f"{label}: fields do not hash to record_sha256")


def _check_chains(report: VerifyReport, found: dict[tuple, dict]) -> dict[int, list[dict]]:
    by_row: dict[int, list[dict]] = defaultdict(list)
    for (row_index, _), record in found.items():
        by_row[row_index].append(record)
    for records in by_row.values():
        records.sort(key=lambda r: r.get("iteration") or 0)
        first = records[0]
        if first.get("prev_record_sha256") != first.get("input_sha256"):
            report.add(
                "chain_broken",
                first["where"],
                first.get("clip_id"),
                f"round {first.get('iteration')} does not start from the source hash "
                "(an earlier round is missing or its link was altered)",
            )
        for prev, rec in zip(records, records[1:], strict=False):
            problems = []
            if rec.get("iteration") != (prev.get("iteration") or 0) + 1:
                problems.append(
                    f"round {prev.get('iteration')} is followed by {rec.get('iteration')}"
                )
            if rec.get("input_sha256") != prev.get("output_sha256"):
                problems.append("input_sha256 is not the previous round's output_sha256")
            if rec.get("prev_record_sha256") != prev.get("record_sha256"):
                problems.append("prev_record_sha256 is not the previous round's record_sha256")
            if problems:
                report.add(
                    "chain_broken",
                    rec["where"],
                    rec.get("clip_id"),
                    f"round {rec.get('iteration')}: " + "; ".join(problems),
                )
    return by_row


def _compare_with_index(
    report: VerifyReport, expected: dict[tuple, dict], found: dict[tuple, dict]
) -> None:
    for key, loc in sorted(expected.items()):
        record = found.get(key)
        if record is None:
            report.add("record_missing", loc["part"], loc["clip_id"], f"round {key[1]}")
        elif loc["record_sha256"] and record.get("record_sha256") != loc["record_sha256"]:
            report.add(
                "record_replaced",
                record["where"],
                loc["clip_id"],
                f"round {key[1]}: record_sha256 differs from the run's index",
            )
    for key in sorted(set(found) - set(expected)):
        if expected:
            rec = found[key]
            report.add("record_unexpected", rec["where"], rec.get("clip_id"), f"round {key[1]}")


def _check_delivered(store: RunStore, report: VerifyReport, by_row: dict[int, list[dict]]) -> None:
    audio_dir = store.path("audio")
    present = set(store.fs.ls(audio_dir, detail=False)) if store.exists(audio_dir) else set()
    present = {p.rstrip("/") for p in present}
    expected_files: set[str] = set()
    try:
        rows = (
            store.read_table(store.manifest)
            .select(["clip_id", "status", "iterations_done"])
            .to_pylist()
        )
    except _READ_ERRORS as exc:
        report.add("manifest_unreadable", "manifest.parquet", detail=str(exc))
        return
    delivered = 0
    for row_index, row in enumerate(rows):
        records = by_row.get(row_index, [])
        ok_rounds = sum(1 for r in records if r.get("status") == "ok")
        if row["status"] != "ok":
            continue
        if (row.get("iterations_done") or 0) != ok_rounds:
            report.add(
                "rounds_mismatch",
                "manifest.parquet",
                row["clip_id"],
                f"manifest says {row.get('iterations_done')} round(s), "
                f"{ok_rounds} ok record(s) found",
            )
        path = store.audio_path(row["clip_id"], row_index)
        expected_files.add(path)
        rel = _rel(store, path)
        if path not in present:
            report.add("delivered_missing", rel, row["clip_id"])
            continue
        delivered += 1
        actual = _bytes_sha256(store, path)
        chosen = delivered_round(records)
        if actual != chosen.get("output_sha256"):
            report.add(
                "delivered_altered",
                rel,
                row["clip_id"],
                f"sha256 {actual} != round {chosen.get('iteration')}'s output_sha256 "
                f"{chosen.get('output_sha256')}",
            )
    report.checked["delivered files"] = delivered
    for path in sorted(present - expected_files):
        report.add("audio_unexpected", _rel(store, path), detail="no ok manifest row names it")


def _predates_audit(store: RunStore) -> bool:
    """A run written before records were sealed: its parts have no record_sha256 column."""
    parts = store.list(store.iterations_dir)
    if not parts:
        return False
    try:
        with store.fs.open(parts[0], "rb") as handle:
            return "record_sha256" not in pq.ParquetFile(handle).schema_arrow.names
    except _READ_ERRORS:
        return False  # unreadable: the full check names it


def _check_sources(store: RunStore, report: VerifyReport, by_row: dict[int, list[dict]]) -> None:
    """Each clip's source file still hashes to its first round's input_sha256."""
    table = store.read_table(store.manifest)
    uris = table.column("audio_uri").to_pylist() if "audio_uri" in table.column_names else []
    checked = 0
    for row_index, records in sorted(by_row.items()):
        uri = uris[row_index] if row_index < len(uris) else None
        first = records[0]
        if not uri:
            continue
        try:
            with fsspec.open(uri, "rb") as handle:
                actual = hashlib.sha256(handle.read()).hexdigest()
        except OSError as exc:
            report.add("source_unreadable", uri, first.get("clip_id"), str(exc))
            continue
        checked += 1
        if actual != first.get("input_sha256"):
            report.add(
                "source_changed",
                uri,
                first.get("clip_id"),
                f"sha256 {actual} != round {first.get('iteration')}'s input_sha256",
            )
    report.checked["source files"] = checked


def verify_run(out: str, run_id: str, check_sources: bool = False) -> VerifyReport:
    """Re-hash every record, round audio, delivered file, the index, the output manifest and
    run.json; check every clip's chain and the run digest; with `check_sources`, also that
    each source file is still the one the run read. Never raises for what it finds."""
    store = RunStore(out, run_id)
    store.fs.invalidate_cache()  # object stores: listings and ETags cached earlier may be stale
    report = VerifyReport(run=store.uri(store.root))
    if _predates_audit(store):
        report.add(
            "unaudited_run",
            "iterations",
            detail="records carry no record_sha256: the "
            "run was written before records were sealed, there is no chain to check",
        )
        return report
    run = _check_run_json(store, report)
    audit = run.get("audit") or {}
    if run and not audit:
        report.add("run_json_altered", "run.json", detail="run.json has no audit section")
    if audit:
        _check_file_hash(
            store,
            report,
            "manifest.parquet",
            audit.get("output_manifest_sha256"),
            "manifest_altered",
        )
        if audit.get("input_manifest_sha256") != (run.get("input_manifest") or {}).get("sha256"):
            report.add("run_json_altered", "run.json", detail="two different input manifest hashes")
    index = _load_index(store, report, audit) if audit else None
    expected = {(r["row_index"], r["iteration"]): r for r in index or []}
    found = _read_parts(store, report, expected)
    report.checked["records"] = len(found)
    if index is not None:
        _compare_with_index(report, expected, found)
    by_row = _check_chains(report, found)
    report.checked["clips"] = len(by_row)
    _check_delivered(store, report, by_row)
    if check_sources:
        _check_sources(store, report, by_row)
    links = [(k[0], k[1], r.get("record_sha256") or "") for k, r in found.items()]
    report.run_digest = run_digest(links, audit.get("input_manifest_sha256") or "")
    if audit and report.run_digest != audit.get("run_digest"):
        report.add(
            "run_digest_mismatch",
            "run.json",
            detail=f"records digest to {report.run_digest}, "
            f"run.json says {audit.get('run_digest')}",
        )
    return report
