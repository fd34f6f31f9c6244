"""One clip's history, source -> rounds -> delivered file, from the records index."""

from __future__ import annotations

import json
import time
from typing import Any

import pyarrow.parquet as pq

from stepedit_core.audit.records import (
    SELECTED_FIELD,
    object_sha256,
    record_digest,
)
from stepedit_core.foundation.store import RunStore
from stepedit_core.judges.verify import clip_verdicts, format_verdicts
from stepedit_core.quality.qc_result import QcResult
from stepedit_core.words.summary import cuts_line, words_line

# too bulky to print in a clip's history; their presence is still covered by record_sha256
BULKY_FIELDS = frozenset({"audio_flac", "input_tokens", "output_tokens"})


def _find_in_index(store: RunStore, clip_id: str) -> list[dict[str, Any]]:
    path = store.audit_index
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
        "delivered_files",
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
    verdicts = clip_verdicts(store, clip_id)
    from stepedit_core.dataset.ratings import clip_ratings  # lazy: the dataset package is big

    ratings = clip_ratings(store, clip_id)
    return {
        "run": store.uri(store.root),
        "clip_id": clip_id,
        "source": {"audio_uri": audio_uri, "sha256": source_sha},
        "rounds": rounds,
        "final": final,
        "verdicts": verdicts,
        "ratings": ratings,
        "intact": all(r["record_ok"] and r["links_ok"] for r in rounds)
        and final.get("delivered_ok") is not False
        and all(v["seal_ok"] for v in verdicts)
        and all(r["seal_ok"] for r in ratings),
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


def delivered_round(
    records: list[dict[str, Any]], selected_round: int | None = None
) -> dict[str, Any]:
    """The record whose audio is the delivered file: the round the output manifest names as
    selected (`--select best`), else one marked selected, else the last."""
    if selected_round is not None:
        named = [r for r in records if r.get("iteration") == selected_round]
        if named:
            return named[-1]
    marked = [r for r in records if r.get(SELECTED_FIELD)]
    return marked[-1] if marked else (records[-1] if records else {})


def _final_view(
    store: RunStore, manifest: list[dict], rounds: list[dict], check_delivered: bool
) -> dict[str, Any]:
    row = next((r for r in manifest if r.get("status") == "ok"), manifest[0] if manifest else {})
    final: dict[str, Any] = {
        k: row.get(k)
        for k in (
            "row_index",
            "status",
            "output_uri",
            "error_code",
            "error",
            "iterations_done",
            "selected_round",
            "selection_reason",
            "qc_status",
            "qc_reasons",
        )
    }
    if row.get("status") == "ok" and rounds:
        path = store.audio_path(row["clip_id"], row["row_index"])
        chosen = delivered_round(rounds, row.get("selected_round"))
        final["expected_sha256"] = chosen.get("output_sha256")
        if row.get("delivered_files"):  # another format or parts: the manifest's own hashes
            files = json.loads(row["delivered_files"])
            final["delivered_files"] = files
            path = store.delivered_file(files[0]["uri"])
            final["expected_sha256"] = files[0]["sha256"]
        final["delivered"] = store.uri(path)
        if check_delivered:
            actual = object_sha256(store, path) if store.exists(path) else None
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
        # measured values only; `--json` keeps the whole record, notes included
        qc = QcResult.parse(r.get("qc_json")).measured()
        if qc:
            lines.append("           qc " + "  ".join(f"{k}={v}" for k, v in qc.items()))
        for label, line in (
            ("words", words_line(r.get("words_json"))),
            ("cuts", cuts_line(r.get("cuts_json"))),
        ):
            if line:
                lines.append(f"           {label} {line}")
        if r.get("error_code"):
            lines.append(f"           error {r['error_code']}: {r.get('error')}")
    lines += format_verdicts(history.get("verdicts", []))
    from stepedit_core.dataset.ratings import format_ratings

    lines += format_ratings(history.get("ratings", []))
    final = history["final"]
    lines.append(f"  final    [{final.get('status')}]  {final.get('delivered') or ''}".rstrip())
    if "sha256" in final:
        matches = (
            "matches the output manifest's sha256"
            if final.get("delivered_files")
            else "matches the delivered round"
        )
        verdict = matches if final.get("delivered_ok") else "MISMATCH"
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
        and k != "qc_json"  # shown as its own line, measured values only
        and (k.startswith("qc") or (isinstance(v, (int, float)) and not isinstance(v, bool)))
    }
