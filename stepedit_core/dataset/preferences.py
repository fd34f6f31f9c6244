"""Preference pairs from a judged (or rated) run: DIR/preferences.parquet and its data card.

For each clip, the rounds (iteration 0: what the clip started from) are paired two by two:
- by a judge: one round's verdict is the clip's label and the other's is not (paralinguistic:
  the judge's 1-3 scores differ by at least `PARALINGUISTIC_MARGIN`); verdicts of different
  judges, models or prompts are never mixed in one pair;
- by a person: one reviewer rated the two rounds 1-5 with a margin over `RATING_MARGIN`.

Each pair names both rounds, their audio (rounds: written to DIR/audio/, byte for byte the
run's FLAC; the source: its own URI) and sha256s, the verdicts or ratings and the records they
chain to. Where the engine made tokens, `prompt`, `chosen` and `rejected` hold the pair in the
conversational form preference trainers read: the prompt is the clip's first editing request
as the model read it (engines/stepaudio/prompts.py), each answer the round's audio tokens
(iteration 0: the clip's audio as that request carried it).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from itertools import permutations
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from stepedit_core.catalog.records import AUDIO_COLUMNS, round_flac
from stepedit_core.dataset.ratings import read_ratings
from stepedit_core.dataset.run_rounds import RoundRef, read_rounds
from stepedit_core.dataset.sft import Location, record_locations, staged_file
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.store import RunStore

PARALINGUISTIC_MARGIN = 2  # 1-3 scores: the top score against the bottom one
RATING_MARGIN = 3  # 1-5 ratings: a pair needs a difference over this (5 against 1)
PREFERENCES_FILE = "preferences.parquet"
BATCH_ROWS = 512  # clips whose tokens and audio are read at a time
RECORD_COLUMNS = ["row_index", "iteration", "input_tokens", "output_tokens", *AUDIO_COLUMNS]
CARD_FILE = "README.md"
MESSAGES = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("clip_id", pa.string()),
        ("row_index", pa.int64()),
        ("preference_source", pa.string()),  # judge / rating
        ("judge", pa.string()),  # gemini, openai, objective; null for ratings
        ("judge_model", pa.string()),
        ("rater", pa.string()),
        ("task", pa.string()),
        ("label", pa.string()),
        ("chosen_iteration", pa.int32()),
        ("rejected_iteration", pa.int32()),
        ("chosen_uri", pa.string()),
        ("rejected_uri", pa.string()),
        ("chosen_sha256", pa.string()),
        ("rejected_sha256", pa.string()),
        ("chosen_verdict", pa.string()),  # the judge's answer, or the rating
        ("rejected_verdict", pa.string()),
        ("chosen_score", pa.int32()),  # paralinguistic score or rating; null otherwise
        ("rejected_score", pa.int32()),
        ("chosen_round_sha256", pa.string()),  # the round records (source: the file's sha256)
        ("rejected_round_sha256", pa.string()),
        ("chosen_judgement_sha256", pa.string()),  # the verdict or rating records
        ("rejected_judgement_sha256", pa.string()),
        ("prompt", MESSAGES),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
    ]
)
HEADER = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: preferences.parquet
---
"""


def judge_pairs(verdicts: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(chosen, rejected) verdicts of one clip by one judge (model and prompt)."""
    pairs = []
    by_iteration = {v["iteration"]: v for v in verdicts if v["status"] == "ok"}
    for a, b in permutations(sorted(by_iteration), 2):
        va, vb = by_iteration[a], by_iteration[b]
        if va["task"] == "paralinguistic":
            better = (va["score"] or 0) - (vb["score"] or 0) >= PARALINGUISTIC_MARGIN
        else:
            better = bool(va["correct"]) and not vb["correct"]
        if better:
            pairs.append((va, vb))
    return pairs


def rating_pairs(ratings: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(chosen, rejected) ratings of one clip by one reviewer."""
    by_iteration = {r["iteration"]: r for r in ratings}
    return [
        (by_iteration[a], by_iteration[b])
        for a, b in permutations(sorted(by_iteration), 2)
        if by_iteration[a]["rating"] - by_iteration[b]["rating"] > RATING_MARGIN
    ]


def _verdict_groups(store: RunStore) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for path in store.list(store.judgements_dir):
        for v in store.read_table(path).to_pylist():
            key = (v["row_index"], v["judge"], v["model"], v["prompt_sha256"], v["task"])
            groups[key].setdefault(v["iteration"], v)  # the same verdict in two parts: once
    return {k: list(v.values()) for k, v in groups.items()}


def _rating_groups(store: RunStore) -> dict[tuple, list[dict[str, Any]]]:
    latest: dict[tuple, dict[str, Any]] = {}
    for r in read_ratings(store):
        key = (r["row_index"], r["rater"] or "", r["iteration"])
        if key not in latest or (r["rated_at"] or "") >= (latest[key]["rated_at"] or ""):
            latest[key] = r
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for (row, rater, _), r in latest.items():
        groups[(row, rater)].append(r)
    return groups


def _single_edit(ref: RoundRef) -> bool:
    """A round of one model pass (its record's tokens are that pass's input and output)."""
    try:
        chain = parse_chain(ref.edit or "")
    except ValueError:
        return False
    return len(chain) == 1 and chain[0].type != "clone"


def conversation(rounds: dict[int, RoundRef], chosen: int, rejected: int) -> dict[str, Any]:
    """`prompt`, `chosen`, `rejected` messages, or nulls where the rounds carry no tokens."""
    from stepedit_core.engines.stepaudio import prompts, tokens

    empty = {"prompt": None, "chosen": None, "rejected": None}
    editing = [rounds[k] for k in sorted(rounds) if k >= 1]
    first = editing[0] if editing else None
    if first is None or not first.input_tokens or not first.instruction or not _single_edit(first):
        return empty

    def answer(iteration: int) -> list[dict[str, str]] | None:
        ref = rounds[iteration]
        if iteration < first.iteration:
            codes = first.input_tokens  # what the clip started from, as the request carried it
        elif _single_edit(ref) and ref.output_tokens:
            codes = ref.output_tokens
        else:
            return None
        return [{"role": "assistant", "content": tokens.to_text(codes)}]

    good, bad = answer(chosen), answer(rejected)
    if good is None or bad is None:
        return empty
    audio = tokens.to_text(first.input_tokens)
    return {
        "prompt": prompts.edit_conversation(first.instruction, audio),
        "chosen": good,
        "rejected": bad,
    }


def _pair_row(
    run_id: str, rounds: dict[int, RoundRef], good: dict, bad: dict, **who: Any
) -> dict[str, Any]:
    a, b = rounds[good["iteration"]], rounds[bad["iteration"]]
    return {
        "run_id": run_id,
        "clip_id": a.clip_id,
        "row_index": a.row_index,
        **who,
        "chosen_iteration": a.iteration,
        "rejected_iteration": b.iteration,
        "chosen_sha256": a.audio_sha256,
        "rejected_sha256": b.audio_sha256,
        "chosen_round_sha256": a.record_sha256,
        "rejected_round_sha256": b.record_sha256,
        "chosen_judgement_sha256": good["record_sha256"],
        "rejected_judgement_sha256": bad["record_sha256"],
    }


def collect_pairs(store: RunStore, run_id: str) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """Every pair of the run (without audio URIs and tokens yet), in row order, and the run's
    rounds by row."""
    rounds_by_row = read_rounds(store)
    rows: list[dict[str, Any]] = []
    for (row, judge, model, _, task), verdicts in sorted(_verdict_groups(store).items()):
        rounds = rounds_by_row.get(row, {})
        for good, bad in judge_pairs([v for v in verdicts if v["iteration"] in rounds]):
            rows.append(
                _pair_row(
                    run_id,
                    rounds,
                    good,
                    bad,
                    preference_source="judge",
                    judge=judge,
                    judge_model=model,
                    rater=None,
                    task=task,
                    label=good["label"],
                    chosen_verdict=good["answer"],
                    rejected_verdict=bad["answer"],
                    chosen_score=good["score"],
                    rejected_score=bad["score"],
                )  # fmt: skip
            )
    for (row, rater), ratings in sorted(_rating_groups(store).items()):
        rounds = rounds_by_row.get(row, {})
        for good, bad in rating_pairs([r for r in ratings if r["iteration"] in rounds]):
            rows.append(
                _pair_row(
                    run_id,
                    rounds,
                    good,
                    bad,
                    preference_source="rating",
                    judge=None,
                    judge_model=None,
                    rater=rater or None,
                    task="rating",
                    label=None,
                    chosen_verdict=str(good["rating"]),
                    rejected_verdict=str(bad["rating"]),
                    chosen_score=good["rating"],
                    rejected_score=bad["rating"],
                )  # fmt: skip
            )
    return rows, rounds_by_row


def _audio_name(ref: RoundRef) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ref.clip_id)[:60].strip("._") or "clip"
    return f"audio/{ref.row_index:08d}-{stem}/iteration-{ref.iteration}.flac"


def build_preferences(out: str, run_id: str, dest: str) -> dict[str, Any]:
    """Write DEST/preferences.parquet, the rounds' audio under DEST/audio/ and the data card
    DEST/README.md; returns the card's summary. DEST is a local path or fsspec URI.

    Pairs are found from the verdicts, ratings and round hashes alone; their tokens and audio
    are then read `BATCH_ROWS` clips at a time through the run's records index, and each batch
    is appended to the file, so memory holds one batch of tokens and audio at most."""
    store = RunStore(out, run_id)
    if not store.exists(store.run_json):
        raise RunRefused(
            f"{store.uri(store.root)} has no run.json: make preference pairs from a finished "
            "run (judge it with `stepedit judge`, or import ratings, first)"
        )
    rows, rounds_by_row = collect_pairs(store, run_id)
    rows.sort(key=lambda r: r["row_index"])
    target = RunStore(dest, "")
    summary = summarize(rows, store, run_id)
    metadata = {"stepedit_preferences": json.dumps({k: summary[k] for k in ("run_id", "run")})}
    schema = SCHEMA.with_metadata(metadata)
    parquet_path = target.path(PREFERENCES_FILE)
    locations = record_locations(store) if rows else {}
    with_tokens = 0
    with (
        staged_file(target, parquet_path) as local,
        pq.ParquetWriter(local, schema, compression="zstd") as sink,
    ):
        for batch in _batches(rows):
            clips = {r["row_index"]: rounds_by_row[r["row_index"]] for r in batch}
            _fill(store, target, locations, clips, batch)
            with_tokens += sum(1 for r in batch if r["prompt"] is not None)
            sink.write_table(pa.Table.from_pylist(batch, schema))
            for r in batch:  # the batch is written: keep only what the card counts
                r.update(prompt=None, chosen=None, rejected=None)
            for rounds in clips.values():
                for ref in rounds.values():
                    ref.input_tokens = ref.output_tokens = None
        if not rows:
            sink.write_table(schema.empty_table())
    summary["with_tokens"] = with_tokens
    target.write_bytes(target.path(CARD_FILE), data_card(summary).encode())
    summary["preferences"] = target.uri(parquet_path)
    summary["card"] = target.uri(target.path(CARD_FILE))
    return summary


def _batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Pairs (sorted by row) in batches of whole clips, about `BATCH_ROWS` clips each."""
    batch: list[dict[str, Any]] = []
    clips: set[int] = set()
    for r in rows:
        if r["row_index"] not in clips and len(clips) >= BATCH_ROWS:
            yield batch
            batch, clips = [], set()
        batch.append(r)
        clips.add(r["row_index"])
    if batch:
        yield batch


def _fill(
    store: RunStore,
    target: RunStore,
    locations: dict[int, list[Location]],
    clips: dict[int, dict[int, RoundRef]],
    batch: list[dict[str, Any]],
) -> None:
    """Tokens, conversations, audio files and URIs of one batch of pairs."""
    wanted: dict[tuple[str, int], list[int]] = defaultdict(list)
    for row in clips:
        for part, group, index, _ in locations.get(row, []):
            wanted[(part, group)].append(index)
    records: dict[tuple[int, int], dict[str, Any]] = {}
    for (part, group), picks in wanted.items():
        with store.fs.open(store.path(part), "rb") as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in RECORD_COLUMNS if c in parquet.schema_arrow.names]
            table = parquet.read_row_group(group, columns=present)
        for record in table.take(picks).to_pylist():
            records[(record["row_index"], record["iteration"])] = record
    for row, rounds in clips.items():
        for ref in rounds.values():
            record = records.get((row, ref.iteration))
            if record is not None and not ref.is_source:
                ref.input_tokens = record["input_tokens"]
                ref.output_tokens = record["output_tokens"]
    uris: dict[tuple[int, int], str | None] = {}
    for r in batch:
        rounds = clips[r["row_index"]]
        r.update(conversation(rounds, r["chosen_iteration"], r["rejected_iteration"]))
        for side in ("chosen", "rejected"):
            ref = rounds[r[f"{side}_iteration"]]
            key = (ref.row_index, ref.iteration)
            if key not in uris:
                uris[key] = ref.source_uri if ref.is_source else None
                if not ref.is_source:
                    path = target.path(_audio_name(ref))
                    target.write_bytes(path, round_flac(records[key], store.run_uri) or b"")
                    uris[key] = target.uri(path)
            r[f"{side}_uri"] = uris[key]


def summarize(rows: list[dict[str, Any]], store: RunStore, run_id: str) -> dict[str, Any]:
    run = store.read_json(store.run_json)
    sources = Counter(
        f"{r['judge']} {r['judge_model']}"
        if r["judge"]
        else f"rating {r['rater'] or '(anonymous)'}"
        for r in rows
    )
    return {
        "run_id": run_id,
        "pairs": len(rows),
        "clips": len({r["row_index"] for r in rows}),
        "with_tokens": None,  # counted as the pairs are written
        "by_source": dict(sorted(sources.items())),
        "by_task": dict(sorted(Counter(r["task"] for r in rows).items())),
        "by_iterations": dict(
            sorted(
                Counter(f"{r['chosen_iteration']}>{r['rejected_iteration']}" for r in rows).items()
            )
        ),
        "run": {
            "run_digest": (run.get("audit") or {}).get("run_digest"),
            "engine": run.get("engine"),
            "ended_at": run.get("ended_at"),
            "run_uri": store.uri(store.root),
        },
    }


def data_card(summary: dict[str, Any]) -> str:
    def table(title: str, counts: dict[str, int]) -> list[str]:
        lines = ["", f"## Pairs by {title}", "", f"| {title} | pairs |", "|---|---|"]
        return lines + [f"| {k} | {n} |" for k, n in counts.items()]

    run = summary["run"]
    engine = run.get("engine") or {}
    lines = [
        HEADER,
        f"# Preference pairs of run `{summary['run_id']}`",
        "",
        "Pairs of rounds of the same clip (iteration 0: what the clip started from), one "
        "`chosen` and one `rejected`: a judge's verdict was the clip's label for the chosen "
        "round and not for the rejected one (paralinguistic: 1-3 scores at least "
        f"{PARALINGUISTIC_MARGIN} apart), or one reviewer rated them 1-5 more than "
        f"{RATING_MARGIN} apart.",
        "",
        f"- run `{run['run_uri']}` (engine {engine.get('name')} {engine.get('version')}, ended "
        f"{run.get('ended_at')}), run digest `{run.get('run_digest')}`",
        f"- pairs: {summary['pairs']} over {summary['clips']} clips; with tokens "
        f"(`prompt`/`chosen`/`rejected`): {summary['with_tokens']}",
    ]
    lines += table("judge or reviewer", summary["by_source"])
    lines += table("task", summary["by_task"])
    lines += table("iterations (chosen>rejected)", summary["by_iterations"])
    lines += [
        "",
        "## Columns",
        "",
        "`prompt`, `chosen` and `rejected` are chat messages (`role`, `content`) as the model "
        "read and wrote them: the system prompt, the first editing request of the clip (its "
        "instruction and the input audio tokens; the `user` message is the model's `human` "
        "turn), and each round's audio tokens as the assistant's answer. They are null where "
        "the engine made no tokens. `*_round_sha256` are the round records of the run (`stepedit "
        "audit RUN CLIP_ID`), `*_judgement_sha256` the verdict or rating records, and "
        "`*_sha256` the audio files' own hashes.",
        "",
    ]
    return "\n".join(lines)
