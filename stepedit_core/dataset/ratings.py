"""Human ratings of rounds (1-5), imported from the review page's export as sealed records.

A reviewer rates rounds on the review page and downloads the ratings (JSON or CSV, one entry
per rated round: `run_id`, `clip_id`, `row_index`, `iteration`, `rating`, `audio_sha256`, and
`rater`, `rated_at` when known). `import_ratings` checks every entry against the run (the clip
and round exist, the rating is a whole number 1-5, the audio is the one rated) and writes the
good ones to `RUN/ratings/ratings-<file sha256>.parquet`; each rating is hash-chained to the
round it rates (iteration 0 without a record: the source file's sha256) and sealed like the
run's own records, so `stepedit verify` checks ratings as it checks rounds and verdicts; the
ledger `RUN/ratings/imports.json` (sealed like run.json) digests each imported file's ratings,
so a ratings file removed or replaced is noticed too.
Importing the same file again changes nothing; a bad entry is named and left out, the good
ones are kept.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from stepedit_core.audit.records import (
    audit_key,
    record_digest,
    run_relative,
    seal_line,
    verdicts_digest,
)
from stepedit_core.audit.records import seal as audit_seal
from stepedit_core.dataset.run_rounds import RoundRef, read_rounds
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.store import RunStore

RATINGS_DIR = "ratings"
LEDGER = "imports.json"  # RUN/ratings/imports.json: every imported file's digest, sealed
RATING_MIN, RATING_MAX = 1, 5
FILE_FIELDS = ("run_id", "clip_id", "row_index", "iteration", "rating", "audio_sha256", "rater",
               "rated_at")  # fmt: skip
SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("row_index", pa.int64()),
        ("iteration", pa.int32()),
        ("rating", pa.int32()),
        ("rater", pa.string()),
        ("rated_at", pa.string()),
        ("audio_sha256", pa.string()),
        ("file_sha256", pa.string()),  # the imported file the rating came from
        ("prev_record_sha256", pa.string()),
        ("record_sha256", pa.string()),
    ]
)


@dataclass
class ImportOutcome:
    path: str
    imported: int = 0
    already: bool = False  # this file was imported before: nothing written
    rejected: list[str] = field(default_factory=list)


def ratings_dir(store: RunStore) -> str:
    return store.path(RATINGS_DIR)


def read_file(data: bytes, name: str) -> list[dict[str, Any]]:
    """The entries of an exported ratings file: JSON (a list, or {"ratings": [...]}) or CSV
    with a header line. Raises RunRefused when it is neither."""
    text = data.decode("utf-8-sig", "replace")
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise RunRefused(f"ratings file {name}: not valid JSON ({exc})") from None
        entries = value.get("ratings") if isinstance(value, dict) else value
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise RunRefused(
                f"ratings file {name}: expected a list of rating objects (or {{'ratings': [...]}})"
            )
        return entries
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not {"clip_id", "iteration", "rating"} <= set(rows[0]):
        raise RunRefused(
            f"ratings file {name}: expected JSON or CSV with the columns "
            f"{', '.join(FILE_FIELDS)} (at least clip_id, iteration, rating)"
        )
    return rows


def _whole(value: Any) -> int | None:
    """An integer from a JSON number or a CSV cell; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def check_entry(
    number: int, entry: dict[str, Any], run_id: str, by_clip: dict[str, dict[int, RoundRef]]
) -> tuple[RoundRef, int] | str:
    """The round rated and the rating, or why the entry can not be imported (naming the entry,
    the field and what was expected)."""
    where = f"entry {number}"
    given_run = entry.get("run_id")
    if given_run not in (None, "") and given_run != run_id:
        return f"{where}: field 'run_id' is {given_run!r}, expected {run_id!r} (another run)"
    clip = entry.get("clip_id")
    if not isinstance(clip, str) or clip not in by_clip:
        return f"{where}: field 'clip_id' is {clip!r}, expected a clip of run {run_id!r}"
    rounds = by_clip[clip]
    iteration = _whole(entry.get("iteration"))
    if iteration is None or iteration not in rounds:
        return (
            f"{where} ({clip}): field 'iteration' is {entry.get('iteration')!r}, expected one "
            f"of the clip's rounds {sorted(rounds)} (0: what the clip started from)"
        )
    rating = _whole(entry.get("rating"))
    if rating is None or not RATING_MIN <= rating <= RATING_MAX:
        return (
            f"{where} ({clip}): field 'rating' is {entry.get('rating')!r}, expected a whole "
            f"number {RATING_MIN}-{RATING_MAX}"
        )
    ref = rounds[iteration]
    sha = entry.get("audio_sha256")
    if sha not in (None, "") and sha != ref.audio_sha256:
        return (
            f"{where} ({clip}): field 'audio_sha256' is {sha!r}, expected {ref.audio_sha256} "
            f"(the audio of iteration {iteration}): the rating is of other audio"
        )
    return ref, rating


def import_ratings(out: str, run_id: str, data: bytes, name: str) -> ImportOutcome:
    """Import one exported ratings file into the run (see the module's docstring)."""
    store = RunStore(out, run_id)
    if not store.exists(store.run_json):
        raise RunRefused(f"{store.uri(store.root)} has no run.json: rate a finished run")
    file_sha = hashlib.sha256(data).hexdigest()
    path = store.path(RATINGS_DIR, f"ratings-{file_sha[:16]}.parquet")
    outcome = ImportOutcome(path=store.uri(path))
    if store.exists(path):
        outcome.already = True
        outcome.imported = store.read_table(path, ["record_sha256"]).num_rows
        return outcome
    entries = read_file(data, name)
    by_clip = {
        next(iter(rounds.values())).clip_id: rounds for rounds in read_rounds(store).values()
    }
    latest: dict[tuple[int, int, str], dict[str, Any]] = {}
    for number, entry in enumerate(entries, start=1):
        checked = check_entry(number, entry, run_id, by_clip)
        if isinstance(checked, str):
            outcome.rejected.append(checked)
            continue
        ref, rating = checked
        rater = str(entry.get("rater") or "").strip() or None
        row = {
            "clip_id": ref.clip_id,
            "row_index": ref.row_index,
            "iteration": ref.iteration,
            "rating": rating,
            "rater": rater,
            "rated_at": str(entry.get("rated_at") or "") or None,
            "audio_sha256": ref.audio_sha256,
            "file_sha256": file_sha,
        }
        # a round rated twice by one reviewer in one file: the later rating stands
        latest[(ref.row_index, ref.iteration, rater or "")] = audit_seal(row, ref.record_sha256)
    rows = sorted(latest.values(), key=lambda r: (r["row_index"], r["iteration"], r["rater"] or ""))
    if rows:
        store.write_table(path, pa.Table.from_pylist(rows, SCHEMA))
        _record_import(store, posixpath.basename(path), [r["record_sha256"] for r in rows])
    outcome.imported = len(rows)
    return outcome


def _ledger_path(store: RunStore) -> str:
    return store.path(RATINGS_DIR, LEDGER)


def read_ledger(store: RunStore) -> tuple[dict[str, Any], bool]:
    """The imports ledger and whether its seal holds (an absent ledger: empty, sealed)."""
    path = _ledger_path(store)
    if not store.exists(path):
        return {"files": {}}, True
    data = store.read_bytes(path)
    sealed_path = path + ".sha256"
    sealed = store.read_bytes(sealed_path).decode().split()[0] if store.exists(sealed_path) else ""
    key = audit_key() if sealed.startswith("hmac-sha256:") else None
    return json.loads(data), sealed == seal_line(data, key).split()[0]


def _record_import(store: RunStore, name: str, hashes: list[str]) -> None:
    """Add one imported file to the ledger and seal it again (the ratings file is written
    first: a crash between the two leaves a file the ledger does not name, which verify
    reports)."""
    ledger, _ = read_ledger(store)
    ledger["files"][name] = {"ratings": len(hashes), "digest": verdicts_digest(hashes)}
    data = (json.dumps(ledger, indent=2, sort_keys=True) + "\n").encode()
    store.write_bytes(_ledger_path(store), data)
    seal = seal_line(data, audit_key()).replace("run.json", LEDGER)
    store.write_bytes(_ledger_path(store) + ".sha256", seal.encode())


def read_ratings(store: RunStore) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in store.list(ratings_dir(store)):
        rows += store.read_table(path).to_pylist()
    return rows


def check_ratings(store: RunStore, report: Any, found: dict[tuple, dict]) -> None:
    """`stepedit verify`: each rating's seal, and that it rates a round (or the source file)
    the run holds. `found`: (row_index, iteration) -> round record."""
    parts = store.list(ratings_dir(store))
    ledger, ledger_ok = read_ledger(store)
    if not ledger_ok:
        report.add("ratings_ledger_altered", f"{RATINGS_DIR}/{LEDGER}", detail="seal broken")
    named = dict(ledger.get("files") or {})
    for gone in sorted(set(named) - {posixpath.basename(p) for p in parts}):
        report.add("ratings_missing", f"{RATINGS_DIR}/{gone}", detail="imported, now gone")
    if not parts:
        return
    links = {r.get("record_sha256") for r in found.values()}
    links |= {r.get("input_sha256") for (_, it), r in found.items() if it == 1}
    count = 0
    for part in parts:
        rel = run_relative(store, part)
        try:
            rows = store.read_table(part).to_pylist()
        except (pa.ArrowException, OSError, ValueError) as exc:
            report.add("ratings_unreadable", rel, detail=f"{type(exc).__name__}: {exc}")
            continue
        entry = named.get(posixpath.basename(part))
        digest = verdicts_digest([r.get("record_sha256") or "" for r in rows])
        if entry is None or entry.get("digest") != digest:
            report.add(
                "ratings_altered",
                rel,
                detail="not in the imports ledger" if entry is None else "ratings added or removed",
            )
        for row in rows:
            count += 1
            what = f"iteration {row.get('iteration')} rating {row.get('rating')}"
            if record_digest(row) != row.get("record_sha256"):
                report.add("rating_altered", rel, row.get("clip_id"), f"{what}: seal broken")
            elif row.get("prev_record_sha256") not in links:
                report.add(
                    "rating_unlinked", rel, row.get("clip_id"), f"{what}: rates no round of the run"
                )
    report.checked["ratings"] = count


def clip_ratings(store: RunStore, clip_id: str) -> list[dict[str, Any]]:
    """Every imported rating of one clip, each with whether its seal holds (`stepedit audit`)."""
    found = []
    for part in store.list(ratings_dir(store)):
        for row in store.read_table(part).to_pylist():
            if row["clip_id"] == clip_id:
                row["seal_ok"] = record_digest(row) == row.get("record_sha256")
                found.append(row)
    return sorted(found, key=lambda r: (r["iteration"], r["rater"] or "", r["rated_at"] or ""))


def format_ratings(ratings: list[dict[str, Any]]) -> list[str]:
    return [
        f"  rating   iteration {r['iteration']}  {r['rating']}/5 by {r['rater'] or '(anonymous)'}"
        + (f" at {r['rated_at']}" if r.get("rated_at") else "")
        + ("" if r["seal_ok"] else "  SEAL BROKEN")
        for r in ratings
    ]
