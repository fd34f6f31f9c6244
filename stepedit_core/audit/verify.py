"""verify_run: re-hash everything a run wrote and name each clip and object that does not match."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.audit.history import delivered_round
from stepedit_core.audit.records import (
    AUDIT_KEY_ENV,
    SELECTED_FIELD,
    audit_key,
    object_sha256,
    record_digest,
    run_digest,
    run_relative,
    seal_line,
)
from stepedit_core.foundation.audio_ref import resolve_ref, sha256_file
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.sources import InputLimits, read_source
from stepedit_core.foundation.store import RunStore, is_temporary
from stepedit_core.judges.verify import check_verdicts

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
    seal_path = store.run_json_seal
    if not store.exists(seal_path):
        report.add("run_json_unsealed", "run.json", detail="run.json.sha256 is missing")
    else:
        with store.fs.open(seal_path, "rb") as handle:
            sealed = (handle.read().decode(errors="replace").split() or ["(empty)"])[0]
        keyed = sealed.startswith("hmac-sha256:")
        key = audit_key()
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
        elif sealed != seal_line(data, key if keyed else None).split()[0]:
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
    actual = object_sha256(store, path)
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
    hashed: dict[str, str | None] = {}  # each referenced audio object, hashed once
    parts = store.list(store.iterations_dir)
    report.checked["part files"] = len(parts)
    for part in parts:
        rel = run_relative(store, part)
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
                    _check_record(store, report, rel, record, hashed)
                    key = (record.get("row_index"), record.get("iteration"))
                    if key in found:
                        report.add(
                            "record_duplicate", rel, record.get("clip_id"), f"round {key[1]}"
                        )
                    links = {k: record.get(k) for k in _LINK_FIELDS}
                    found[key] = dict(links, where=f"{rel}#rg{group}:{row_in_group}")
    report.checked["round audio objects"] = len(hashed)
    return found


def _store_relative(store: RunStore, uri: str) -> str:
    """A referenced object's name relative to the run folder (its URI when outside it)."""
    _, path = fsspec.core.url_to_fs(uri)
    return run_relative(store, path) if path.startswith(store.root + "/") else uri


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


def _check_record(
    store: RunStore, report: VerifyReport, rel: str, record: dict, hashed: dict[str, str | None]
) -> None:
    """A record's own hash, and its audio's: the bytes inside it, or the object it references
    (followed and re-hashed; `hashed` keeps each object's digest, as rounds may share one)."""
    clip = record.get("clip_id")
    label = f"round {record.get('iteration')}"
    flac, ref = record.get("audio_flac"), record.get("audio_ref")
    uri = resolve_ref(ref, store.run_uri) if ref else None
    if flac is not None and hashlib.sha256(flac).hexdigest() != record.get("output_sha256"):
        report.add(
            "audio_altered", rel, clip, f"{label}: audio_flac does not hash to output_sha256"
        )
    elif uri:
        if uri not in hashed:
            try:
                hashed[uri] = sha256_file(uri)
            except FileNotFoundError:
                hashed[uri] = None
        where = _store_relative(store, uri)
        if hashed[uri] is None:
            report.add("audio_missing", where, clip, f"{label}: its audio object is missing")
        elif hashed[uri] != record.get("output_sha256"):
            report.add(
                "audio_altered", where, clip, f"{label}: {uri} does not hash to output_sha256"
            )
    elif record.get("output_sha256"):
        report.add("audio_missing", rel, clip, f"{label}: output_sha256 set but no audio")
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


def _check_delivered_files(
    store: RunStore, report: VerifyReport, row: dict, present: set[str], expected: set[str]
) -> int:
    """Each file of a row delivered in another format or in parts still hashes to the sha256
    the output manifest recorded for it; returns how many were checked."""
    checked = 0
    for entry in json.loads(row["delivered_files"]):
        path = store.delivered_file(entry["uri"])
        expected.add(path)
        rel = run_relative(store, path)
        if path not in present:
            report.add("delivered_missing", rel, row["clip_id"])
            continue
        checked += 1
        actual = object_sha256(store, path)
        if actual != entry["sha256"]:
            report.add(
                "delivered_altered",
                rel,
                row["clip_id"],
                f"sha256 {actual} != the manifest's {entry['sha256']}",
            )
    return checked


def _check_delivered(store: RunStore, report: VerifyReport, by_row: dict[int, list[dict]]) -> None:
    audio_dir = store.audio_dir
    present = set(store.fs.ls(audio_dir, detail=False)) if store.exists(audio_dir) else set()
    # a temporary left by a crashed local write is not a delivered file
    present = {p.rstrip("/") for p in present if not is_temporary(p)}
    expected_files: set[str] = set()
    try:
        manifest = store.read_table(store.manifest)
        # an incremental run's reused rows point at an earlier run's file and records
        columns = ["clip_id", "status", "iterations_done", "selected_round", "reused_from_run",
                   "delivered_files"]  # fmt: skip
        rows = manifest.select([c for c in columns if c in manifest.column_names]).to_pylist()
    except _READ_ERRORS as exc:
        report.add("manifest_unreadable", "manifest.parquet", detail=str(exc))
        return
    delivered = 0
    for row_index, row in enumerate(rows):
        records = by_row.get(row_index, [])
        ok_rounds = sum(1 for r in records if r.get("status") == "ok")
        if row["status"] != "ok" or row.get("reused_from_run"):
            continue
        if (row.get("iterations_done") or 0) != ok_rounds:
            report.add(
                "rounds_mismatch",
                "manifest.parquet",
                row["clip_id"],
                f"manifest says {row.get('iterations_done')} round(s), "
                f"{ok_rounds} ok record(s) found",
            )
        if row.get("delivered_files"):  # another format or parts: their own recorded hashes
            delivered += _check_delivered_files(store, report, row, present, expected_files)
            continue
        path = store.audio_path(row["clip_id"], row_index)
        expected_files.add(path)
        rel = run_relative(store, path)
        if path not in present:
            report.add("delivered_missing", rel, row["clip_id"])
            continue
        delivered += 1
        actual = object_sha256(store, path)
        chosen = delivered_round(records, row.get("selected_round"))
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
        report.add(
            "audio_unexpected", run_relative(store, path), detail="no ok manifest row names it"
        )


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
        try:  # bounded like a run's reads: a FIFO or a device never hangs verify
            actual = hashlib.sha256(read_source(uri, InputLimits())).hexdigest()
        except (OSError, ItemFailure) as exc:
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
    check_verdicts(store, report, found, audit)
    from stepedit_core.dataset.ratings import check_ratings  # lazy: the dataset package is big

    check_ratings(store, report, found)
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
