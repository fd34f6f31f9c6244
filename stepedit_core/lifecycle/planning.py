"""Planning: check every row against the engine and cut the good ones into shards.

A row that can not be edited (a blank cell, a duplicate clip id, audio outside the allowed
roots, an edit the engine can not run, a missing transcript) becomes a failed `RowResult` here,
before any work runs; the rest become `PlanRow`s, written as shard plans of `shard_size` rows
each. Prefect retries and reports shards, never single clips.

An incremental run (`reuse`, see incremental.py) also decides here which rows an earlier run
under the same output root already finished: those become ok `RowResult`s pointing at the
earlier output and never reach a shard.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from stepedit_core.catalog.access import AllowedRoots, covering_roots
from stepedit_core.catalog.manifest import clean, clip_seed, iter_rows
from stepedit_core.catalog.records import PlanRow, RowResult, table_of
from stepedit_core.catalog.segment_texts import SegmentsError, joined_text, parse_segments
from stepedit_core.engines.base import Engine
from stepedit_core.foundation.edits import EditError, EditSpec, parse_chain
from stepedit_core.foundation.failpoints import failpoint
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.sources import InputLimits, check_source
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.incremental import Reuse, reused_keys_table


@dataclass
class Sharding:
    """What planning decided: the shards to run and how many rows were refused, by code."""

    shards: list[int] = field(default_factory=list)
    planned_rows: int = 0
    refused_rows: int = 0
    refused_by_code: dict[str, int] = field(default_factory=dict)
    reused_rows: int = 0  # incremental runs: rows an earlier run already finished
    sources_hashed: int = 0  # incremental runs: source files read in full to hash them
    source_hashes_reused: int = 0  # ... and those whose size and mtime/ETag matched a hash


def check_rows(
    uri: str,
    job_chain: tuple[EditSpec, ...],
    engine: Engine,
    base_seed: int,
    roots: AllowedRoots | None = None,
    limits: InputLimits | None = None,
) -> Iterator[PlanRow | RowResult]:
    """A `PlanRow` for each row to edit, a failed `RowResult` for each row refused. With
    `roots`, a row whose audio resolves outside them is refused and its URI is never opened.
    A local source that is not a regular file or is over the size limit is refused from its
    stat (sources.py)."""
    for _, planned in _checked_rows(uri, job_chain, engine, base_seed, roots, limits):
        yield planned


def _checked_rows(
    uri: str,
    job_chain: tuple[EditSpec, ...],
    engine: Engine,
    base_seed: int,
    roots: AllowedRoots | None,
    limits: InputLimits | None = None,
) -> Iterator[tuple[dict, PlanRow | RowResult]]:
    """Each manifest row with what `check_rows` makes of it."""
    limits = limits or InputLimits()
    seen: set[str] = set()
    for index, row in iter_rows(uri):
        clip_id = clean(row.get("clip_id"))
        try:
            planned = _plan_row(index, row, clip_id, seen, job_chain, engine, base_seed, roots)
            check_source(planned.audio_uri, limits)
            yield row, planned
        except ItemFailure as failure:
            yield row, RowResult.failed(index, clip_id, failure.code, f"row {index}: {failure}")
        if clip_id is not None:
            seen.add(clip_id)


def refusal_of_every_row(
    uri: str,
    job_chain: tuple[EditSpec, ...],
    engine: Engine,
    roots: AllowedRoots | None = None,
) -> str | None:
    """When planning would refuse every row of the manifest for one and the same reason: what
    to tell the user, with what would fix it. A run of such a job would only write failure
    records. None as soon as one row would be planned or a second reason appears, so a usable
    catalog costs a row or two here; an empty manifest is not refused."""
    code, first, rows = None, "", 0
    audio_uris: set[str] = set()
    for row, planned in _checked_rows(uri, job_chain, engine, 0, roots):
        if not isinstance(planned, RowResult) or code not in (None, planned.error_code):
            return None
        code, first = planned.error_code, first or str(planned.error)
        rows += 1
        if code == "uri_not_allowed" and clean(row.get("audio_uri")) is not None:
            audio_uris.add(str(row["audio_uri"]))
    if code is None:
        return None
    message = f"every row ({rows}) would be refused at plan time as {code}; {first}"
    covering = covering_roots(audio_uris)
    if code == "uri_not_allowed" and covering:
        message += "; the audio lies under " + ", ".join(covering) + ": run again with "
        message += " ".join(f"--allow-root {root}" for root in covering)
    return message


def _plan_row(
    index: int,
    row: dict,
    clip_id: str | None,
    seen: set[str],
    job_chain: tuple[EditSpec, ...],
    engine: Engine,
    base_seed: int,
    roots: AllowedRoots | None = None,
) -> PlanRow:
    """The row with its edit chain (its `edit` cell, else the job's), or ItemFailure saying why
    it is refused."""
    if clip_id is None:
        raise ItemFailure(
            "missing_clip_id", "field 'clip_id' is empty; expected a non-empty string"
        )
    if clip_id in seen:
        raise ItemFailure(
            "duplicate_clip_id", f"clip_id {clip_id!r} already appears earlier in the manifest"
        )
    audio_uri = clean(row.get("audio_uri"))
    if audio_uri is None:
        raise ItemFailure("missing_audio_uri", "field 'audio_uri' is empty; expected a path or URI")
    # the resolved URI is the one opened later: what is read is what was checked
    audio_uri = roots.check(audio_uri) if roots is not None else row["audio_uri"]
    cell = clean(row.get("edit"))
    try:
        chain = parse_chain(cell) if cell is not None else job_chain
    except EditError as exc:
        raise ItemFailure("invalid_edit", f"field 'edit' {row.get('edit')!r}: {exc}") from None
    if not chain:
        raise ItemFailure(
            "missing_edit", "no edit: the job gives no --edit and field 'edit' is empty"
        )
    text, target_text = clean(row.get("text")), clean(row.get("target_text"))
    segments = clean(row.get("segments"))
    if segments is not None:
        try:
            timed_texts = parse_segments(segments)
        except SegmentsError as exc:
            raise ItemFailure(
                "invalid_segments",
                f"field 'segments': {exc}; expected a JSON list of "
                '{"start": s, "end": s, "text": "..."}',
            ) from None
        text = text or joined_text(timed_texts)
    engine.check_row(chain, text, target_text)
    return PlanRow(
        row_index=index,
        clip_id=clip_id,
        audio_uri=audio_uri,
        edits=chain,
        text=text,
        target_text=target_text,
        language=clean(row.get("language")),
        speaker=clean(row.get("speaker")),
        seed=clip_seed(clip_id, base_seed),
        segments=segments,
    )


REUSE_BATCH_ROWS = 1024  # rows looked up (and their sources hashed) together


def plan_shards(
    store: RunStore,
    manifest_uri: str,
    job_chain: tuple[EditSpec, ...],
    engine: Engine,
    base_seed: int,
    shard_size: int,
    roots: AllowedRoots | None = None,
    reuse: Reuse | None = None,
    limits: InputLimits | None = None,
) -> Sharding:
    """Check every row, write the shard plans and the refused (and reused) rows' results, then
    `done.json`.

    Planning is deterministic for a given manifest and job, so an attempt that died while
    planning is simply planned again; a finished plan is read back instead."""
    if store.exists(store.plan_done):
        return Sharding(**store.read_json(store.plan_done))
    if reuse is not None:
        # what an earlier run finishes may change between attempts, and with it the shards:
        # plans an interrupted attempt wrote must not outlive it
        store.remove(store.list(store.plan_dir, prefix="shard-"))
    sharding = Sharding()
    work: list[PlanRow] = []
    refused: list[RowResult] = []
    reused: list[RowResult] = []
    reused_keys: list[tuple[int, str]] = []
    pending: list[PlanRow] = []

    def add_work(rows: list[PlanRow]) -> None:
        nonlocal work
        for row in rows:
            work.append(row)
            if len(work) == shard_size:
                _write_shard(store, sharding, work)
                work = []

    def look_up_pending() -> None:
        assert reuse is not None
        todo, found, keys = reuse.split(pending)
        reused.extend(found)
        reused_keys.extend(keys)
        pending.clear()
        add_work(todo)

    for planned in check_rows(manifest_uri, job_chain, engine, base_seed, roots, limits):
        if isinstance(planned, RowResult):
            refused.append(planned)
            code = str(planned.error_code)
            sharding.refused_by_code[code] = sharding.refused_by_code.get(code, 0) + 1
        elif reuse is None:
            add_work([planned])
        else:
            pending.append(planned)
            if len(pending) == REUSE_BATCH_ROWS:
                look_up_pending()
    if pending:
        look_up_pending()
    if work:
        _write_shard(store, sharding, work)
    sharding.refused_rows = len(refused)
    store.write_table(store.plan_failures(), table_of(refused, RowResult.SCHEMA))
    if reuse is not None:
        sharding.reused_rows = len(reused)
        sharding.sources_hashed = reuse.hasher.hashed
        sharding.source_hashes_reused = reuse.hasher.reused
        store.write_table(store.plan_reused(), table_of(reused, RowResult.SCHEMA))
        store.write_table(store.reused_keys, reused_keys_table(reused_keys))
        reuse.save_sources()
    store.write_json(store.plan_done, asdict(sharding))
    return sharding


def _write_shard(store: RunStore, sharding: Sharding, rows: list[PlanRow]) -> None:
    shard = len(sharding.shards)
    store.write_table(store.shard_plan(shard), table_of(rows, PlanRow.SCHEMA))
    failpoint("plan.shard_written")
    sharding.shards.append(shard)
    sharding.planned_rows += len(rows)
