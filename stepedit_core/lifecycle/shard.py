"""Running planned shards with exactly-once commits, so a crashed run resumes where it stopped.

The commit unit is a *part*: one Parquet object in `iterations/` holding the round records of a
few hundred finished clip-rounds and, in its footer, the row results of the items it finished.
A record references its round's audio, an object already published under `round-audio/` by the
round's QC stage (content-addressed, so an object a crashed attempt left is simply reused). A
part is written whole or not at all, so committed work is exactly the set of part objects: a
crashed attempt leaves no half-committed item. A finished item's records are taken from the
run's round channel, where each round's end put them (round_handoff.py), checked against what
the item sealed, and buffered with its row result. Only after a part is committed are its items'
final audio files published (the chosen round's object itself, linked or copied inside the
store, or files made from it in the delivery format by delivered_files.py, so a resume
republishes any that a crash left unwritten).
Once every item of a shard is committed, the shard's row results are written as one object,
the shard's done marker.

A resumed attempt trusts nothing it has not checked: every committed part it builds on is read
in full and checked against its hashes (integrity.py); a damaged one is quarantined and its
items are run again (a done shard with a damaged part is reopened). It skips done shards,
takes over the intact parts of the others, and runs only the items no part holds. All pending
shards stream through one executor run, so each model stage sets up once per run, not once per
shard. A worker process that dies on an item costs a
retry of its batch; when the batch keeps killing workers, the remaining items are split and run
again until the item that kills its worker is found, which gets a `worker_died` failure.
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from stepedit_core.catalog.records import (
    PlanRow,
    RoundRecord,
    RowResult,
    round_table,
    table_of,
    text_source_of,
)
from stepedit_core.engines import round_record_schema
from stepedit_core.engines.base import Engine
from stepedit_core.executors import Executor
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.audio_ref import resolve_ref
from stepedit_core.foundation.failpoints import failpoint
from stepedit_core.foundation.sources import InputLimits
from stepedit_core.foundation.stages import SealedRounds, Stage, WorkItem
from stepedit_core.foundation.store import RunStore, table_bytes
from stepedit_core.judges.stage import RoundJudging
from stepedit_core.judges.verdict import Verdict, verdict_table
from stepedit_core.lifecycle.integrity import (
    RECORDS_KEY,  # clip-rounds in a part, and in a shard's results object
    RESULTS_KEY,  # row results in a part's footer
    CheckedPart,
    DamagedPart,
    check_part,
    quarantine,
    shard_results_records,
)
from stepedit_core.lifecycle.lease import LeaseLost
from stepedit_core.lifecycle.round_handoff import (
    RoundRecordChannel,
    drop_rounds,
    open_round_channel,
    take_records,
)
from stepedit_core.lifecycle.rounds import build_stages, has_clone
from stepedit_core.lifecycle.stops import check_stop, remember_stops
from stepedit_core.quality.delivered_files import (
    needs_packaging,
    package,
    package_file,
)
from stepedit_core.quality.delivery import QcPlan, select_best
from stepedit_core.quality.qc_result import QcResult

# a delivered file's content: its bytes, the URI of a round's object in the run's store, or
# a local scratch file made in blocks (removed once published)
Delivered = bytes | str | Path

RECORDS_PER_PART = 256  # clip-rounds per part: few, large objects on S3
COMMIT_EVERY_S = 30.0  # a slow engine still commits at least this often

# done clip-rounds, total clips, failed clips so far
Progress = Callable[[int, int, int], None]


@dataclass
class ShardSummary:
    """How one shard went in this attempt (failures are counted once, at merge)."""

    shard: int
    items: int = 0
    resumed_items: int = 0  # committed by an earlier attempt
    ok: int = 0
    failed: int = 0
    records: int = 0  # clip-rounds committed by this attempt
    resumed_records: int = 0  # clip-rounds committed by earlier attempts
    parts: int = 0
    quarantined_parts: int = 0  # damaged parts moved aside on resume (their items redone)
    seconds: float = 0.0
    first_done_s: float | None = None


@dataclass
class ShardsOutcome:
    summaries: list[ShardSummary] = field(default_factory=list)
    setups: dict[str, int] = field(default_factory=dict)

    @property
    def resumed_records(self) -> int:
        return sum(s.resumed_records for s in self.summaries)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.summaries)


def plan_rows(store: RunStore, shard: int) -> list[PlanRow]:
    table = store.read_table(store.shard_plan(shard))
    return [PlanRow.from_row(row) for row in table.to_pylist()]


def committed_parts(
    store: RunStore, shard: int, listing: Listing | None = None
) -> tuple[list[CheckedPart], int]:
    """Every committed part of a shard, each checked in full (`integrity.check_part`); a
    damaged one is moved to the run's quarantine instead. Returns the intact parts and how many
    were quarantined."""
    listing = listing or Listing(store, store.iterations_dir, ".parquet")
    prefix = f"shard-{shard:05d}-part-"
    parts, quarantined = [], 0
    for path in (p for p in listing() if posixpath.basename(p).startswith(prefix)):
        if not store.exists(path):  # quarantined earlier in this attempt
            continue
        try:
            parts.append(check_part(store, path))
        except DamagedPart as exc:
            quarantine(store, path, str(exc))
            quarantined += 1
    return parts, quarantined


class Listing:
    """A folder's objects, listed once per run and only when first asked for: resuming many
    partly done shards must not list `iterations/` or `audio/` once per shard (on S3 a listing
    of 100k objects is a hundred requests)."""

    def __init__(self, store: RunStore, directory: str, suffix: str = "") -> None:
        self.store, self.directory, self.suffix = store, directory, suffix
        self._names: list[str] | None = None
        self._set: frozenset[str] | None = None

    def __call__(self) -> list[str]:
        if self._names is None:
            self._names = self.store.list(self.directory, suffix=self.suffix)
        return self._names

    def __contains__(self, name: str) -> bool:
        if self._set is None:
            self._set = frozenset(self())
        return name in self._set


class ShardWriter:
    """Commits one shard's finished items part by part, then its results object."""

    def __init__(
        self,
        store: RunStore,
        shard: int,
        rows: list[PlanRow],
        qc_plan: QcPlan | None = None,
        parts: Listing | None = None,
        published: Listing | None = None,
    ) -> None:
        self.store, self.shard = store, shard
        self.parts = parts or Listing(store, store.iterations_dir, ".parquet")
        self.published = published or Listing(store, store.audio_dir)
        self.qc_plan = qc_plan or QcPlan()
        self.summary = ShardSummary(shard=shard, items=len(rows))
        self.results: list[RowResult] = []
        self.pending_rows = {r.row_index for r in rows}
        self.next_part = 0
        self._items: list[WorkItem] = []
        self._delivered: list[list[tuple[str, Delivered]] | None] = []
        self._records: list[RoundRecord] = []
        self._verdicts: list[Verdict] = []
        self._results: list[RowResult] = []
        self._last_commit = time.monotonic()
        self._closed = False
        self._scratch_dir: Path | None = None
        self._resume()

    def _resume(self) -> None:
        """Take over what earlier attempts committed; republish their missing audio."""
        parts, self.summary.quarantined_parts = committed_parts(self.store, self.shard, self.parts)
        for part in parts:
            path, rows, records = part.path, part.results, part.records
            self.next_part = max(self.next_part, _part_number(path) + 1)
            self.summary.resumed_records += records
            self.summary.resumed_items += len(rows)
            self.results.extend(rows)
            self.pending_rows -= {r.row_index for r in rows}
            missing = [r for r in rows if r.status == "ok" and self._audio(r) not in self.published]
            if missing:
                self._republish(path, missing)

    def _audio(self, result: RowResult) -> str:
        """The (first) delivered file of a row."""
        if result.delivered_files:
            first = json.loads(result.delivered_files)[0]["uri"]
            return self.store.delivered_file(first)
        return self.store.audio_path(str(result.clip_id), result.row_index)

    def _republish(self, part: str, rows: list[RowResult]) -> None:
        """Write the delivered files a crash left unwritten, from the committed records."""
        recs: dict[tuple[int, int], dict] = {}
        last: dict[int, int] = {}
        for rec in self.store.read_table(part).to_pylist():
            if rec["status"] == "ok" and (rec.get("audio_ref") or rec.get("audio_flac")):
                recs[(rec["row_index"], rec["iteration"])] = rec
                last[rec["row_index"]] = max(last.get(rec["row_index"], -1), rec["iteration"])
        for result in rows:
            chosen = result.selected_round
            if chosen is None:
                chosen = last[result.row_index]
            rec = recs[(result.row_index, chosen)]
            replay = RowResult.ok(result.row_index, str(result.clip_id), "", 0)
            ref = rec.get("audio_ref")
            source = resolve_ref(ref, self.store.run_uri) if ref else rec["audio_flac"]
            files = self._files(replay, source, rec["duration_s"], None, check=False)
            for path, data in files:
                self._deliver(path, data)

    def _files(
        self,
        result: RowResult,
        flac: Delivered,
        duration_s: float | None,
        qc_json: str | None,
        check: bool = True,
    ) -> list[tuple[str, Delivered]]:
        """(path, content) of each file the row is delivered as: the round's FLAC itself (the
        URI of its object, or bytes), or the files of another format / a long clip's parts,
        recorded in `result` with their QC (`check`: measure them; a republished file's
        verdict is already committed)."""
        clip, row = str(result.clip_id), result.row_index
        if not needs_packaging(self.qc_plan, duration_s):
            return [(self.store.audio_path(clip, row), flac)]

        def path_for(ext: str, part: int | None) -> str:
            return self.store.audio_path(
                clip, row, ext if part is None else f"part{part:02d}.{ext}"
            )

        metrics = QcResult.parse(qc_json).metrics or None
        if isinstance(flac, str):
            # a round by reference: split, encoded and measured in blocks from its object
            delivery = package_file(flac, self._scratch(), path_for, self.qc_plan, metrics, check)
        else:
            delivery = package(flac, path_for, self.qc_plan, metrics, check)
        result.output_uri = self.store.uri(delivery.files[0].path)
        result.delivered_files = delivery.files_json(self.store.uri)
        if delivery.qc_pass is not None:
            result.qc_status = "pass" if delivery.qc_pass else "fail"
            result.qc_reasons = delivery.qc_reasons
        return [(f.path, f.data) for f in delivery.files]  # bytes, or a scratch file

    @property
    def done(self) -> bool:
        return not self.pending_rows and not self._items

    def add(self, item: WorkItem, records: list[RoundRecord]) -> None:
        """Buffer a finished item with the records of its rounds (taken from the run's round
        channel, round_handoff.py); they commit together in one part."""
        self.store.check_fence(read=False)
        self.pending_rows.discard(item.row_index)
        self._items.append(item)
        self._records.extend(records)
        self._verdicts.extend(item.verdicts)
        result, flac = self._result(item, records)
        self._results.append(result)
        self._delivered.append(flac)
        stale = time.monotonic() - self._last_commit >= COMMIT_EVERY_S
        if len(self._records) >= RECORDS_PER_PART or stale or not self.pending_rows:
            self.commit()

    def _result(
        self, item: WorkItem, records: list[RoundRecord]
    ) -> tuple[RowResult, list[tuple[str, Delivered]] | None]:
        """The item's row result and the files to deliver (None when it failed)."""
        rounds_done = sum(1 for r in records if r.ok)
        if not item.failed and item.audio is None:
            item.fail("no_output", "no round produced audio")
        ok = [r for r in records if r.ok and (r.audio_ref or r.audio_flac)]
        chosen, reason = self._choose(ok, item.verdicts) if ok and not item.failed else (None, None)
        if ok and not item.failed and chosen is None:  # every round over --qc-max-wer
            item.fail("over_max_wer", str(reason))
        if item.failed:
            self.summary.failed += 1
            failed = RowResult.failed(
                item.row_index, item.clip_id, str(item.error_code), str(item.error), rounds_done
            )
            failed.text_source = text_source_of(item)
            return failed, None
        self.summary.ok += 1
        uri = self.store.uri(self.store.audio_path(item.clip_id, item.row_index))
        result = RowResult.ok(item.row_index, item.clip_id, uri, rounds_done)
        result.text_source = text_source_of(item)
        if chosen is None:  # nothing recorded (cannot happen for an item that ran): its audio as is
            flac = audio_io.encode_flac(item.samples())  # type: ignore[arg-type]
            return result, self._files(result, flac, None, None)
        result.deliver(chosen, reason or item.stopped_by)  # a judge's stop says why it ended
        ref = chosen.audio_ref
        source = resolve_ref(ref, self.store.run_uri) if ref else chosen.audio_flac
        assert source is not None  # `ok` keeps only records with audio
        return result, self._files(result, source, chosen.duration_s, chosen.qc_json)

    def _choose(
        self, records: list[RoundRecord], verdicts: list[Verdict] | None = None
    ) -> tuple[RoundRecord | None, str | None]:
        """The round to deliver: the last, or with `select=best` the best by `select_best`,
        among the rounds a judge confirmed when there are any (all rounds when none of those
        is under --qc-max-wer). None when every round is over --qc-max-wer. The delivered
        file is that round's FLAC, byte for byte, so its sha256 is the round's output_sha256
        and the audit chain ends at the delivered file."""
        if self.qc_plan.select != "best":
            return records[-1], None
        landed = _confirmed_rounds(verdicts or [])
        confirmed = [r for r in records if r.round in landed]
        for candidates in (confirmed, records) if confirmed else (records,):
            metrics = [(r.round, QcResult.parse(r.qc_json).metrics) for r in candidates]
            picked = select_best(metrics, self.qc_plan.profile, self.qc_plan.max_wer)
            if picked is not None:
                break
        if picked is None and self.qc_plan.max_wer is not None:
            wers = ", ".join(f"round {n}: {m.get('wer')}" for n, m in metrics)
            return None, (
                f"every round's word error rate is over --qc-max-wer {self.qc_plan.max_wer:g} "
                f"({wers}); no round is delivered"
            )
        chosen = (
            next(r for r in candidates if r.round == picked.round) if picked else candidates[-1]
        )
        reason = picked.reason if picked else None
        if chosen.round in landed:
            reason = "judge confirmed" + (f"; {reason}" if reason else "")
        return chosen, reason

    def commit(self) -> None:
        """Write the buffered records and results as one part, then publish the audio."""
        if not self._items:
            return
        path = self.store.iteration_part(self.shard, self.next_part)
        if self._verdicts:
            # before the part: a crash between the two leaves verdicts that the rerun of the
            # part's items overwrites under the same name, never verdicts without their rounds
            judged = self.store.judgement_part(posixpath.basename(path))
            self.store.write_table(judged, verdict_table(self._verdicts))
        results = json.dumps([r.to_row() for r in self._results])
        meta = {RESULTS_KEY: results, RECORDS_KEY: str(len(self._records))}
        data = table_bytes(round_table(self._records, round_record_schema()), meta)
        self.store.check_fence()  # as late as possible: an attempt that lost its lease stops
        if self.store.exists(path):  # a part name is used once: another attempt wrote it
            raise LeaseLost(
                f"run {self.store.run_id!r}: {self.store.uri(path)} was committed by another "
                "attempt; this attempt stopped and committed nothing more"
            )
        self.store.write_bytes(path, data)
        failpoint("shard.part_committed")
        for result, files in zip(self._results, self._delivered, strict=True):
            if result.status == "ok" and files is not None:
                for path, data in files:
                    self.store.check_fence(read=False)
                    self._deliver(path, data)
        failpoint("shard.audio_published")
        for item in self._items:
            _release(item)
        self.next_part += 1
        self.summary.parts += 1
        self.summary.records += len(self._records)
        self.results.extend(self._results)
        self._items, self._records, self._results, self._delivered = [], [], [], []
        self._verdicts = []
        self._last_commit = time.monotonic()

    def _deliver(self, path: str, content: Delivered) -> None:
        """Write a delivered file: bytes, the round's object itself (a URI in the store) or a
        scratch file made in blocks (then removed)."""
        if isinstance(content, Path):
            self.store.put_file(str(content), path)
            content.unlink(missing_ok=True)
        elif isinstance(content, str):
            self.store.copy_object(content, path)
        else:
            self.store.write_bytes(path, content)

    def _scratch(self) -> Path:
        """A local folder for files delivered in blocks until they are published."""
        if self._scratch_dir is None:
            self._scratch_dir = Path(tempfile.mkdtemp(prefix="stepedit-deliver-"))
        return self._scratch_dir

    def close(self) -> ShardSummary:
        """Commit what is buffered; once nothing is pending, write the shard's done marker."""
        self.commit()
        if self._scratch_dir is not None:
            shutil.rmtree(self._scratch_dir, ignore_errors=True)
            self._scratch_dir = None
        if not self.pending_rows and not self._closed:
            self.store.check_fence()
            self._closed = True
            records = self.summary.records + self.summary.resumed_records
            self.store.write_table(
                self.store.shard_results(self.shard),
                table_of(sorted(self.results, key=lambda r: r.row_index), RowResult.SCHEMA),
                {RECORDS_KEY: str(records)},
            )
        return self.summary


def _release(item: WorkItem) -> None:
    """Drop a committed item's audio and what it kept of its rounds. An executor may hand back
    the very objects `run_shards` holds for the whole run (the local executor does): kept,
    every clip's audio would stay in memory until the run ends, so a catalog's peak memory
    grew with its size."""
    item.audio = item.original = item.prompt = item.output = item.next_audio = None
    item.round_qc = item.qc_reference = None
    item.sealed = SealedRounds()
    item.verdicts = []
    item.trace = item.words = None


def _confirmed_rounds(verdicts: list[Verdict]) -> set[int]:
    """Rounds whose every verdict says the edit landed."""
    by_round: dict[int, list[Verdict]] = {}
    for verdict in verdicts:
        by_round.setdefault(verdict.round, []).append(verdict)
    return {k for k, group in by_round.items() if all(v.landed for v in group)}


def _part_number(path: str) -> int:
    return int(path.rsplit("-part-", 1)[1].split(".", 1)[0])


def run_shards(
    store: RunStore,
    engine: Engine,
    executor: Executor,
    shards: list[int],
    rounds: int,
    prompt_mode: str = "chain",
    progress: Progress | None = None,
    qc_plan: QcPlan | None = None,
    judging: RoundJudging | None = None,
    limits: InputLimits | None = None,
) -> ShardsOutcome:
    """Run every shard that is not done yet; returns one summary per shard."""
    started = time.perf_counter()
    outcome = ShardsOutcome()
    writers: dict[int, ShardWriter] = {}
    parts = Listing(store, store.iterations_dir, ".parquet")
    published = Listing(store, store.audio_dir)
    shard_of: dict[int, int] = {}
    items: list[WorkItem] = []
    for shard in shards:
        damaged = 0
        if store.exists(store.shard_results(shard)):
            _, damaged = committed_parts(store, shard, parts)
            records = shard_results_records(store, shard)
            if not damaged and records is not None:
                outcome.summaries.append(ShardSummary(shard=shard, resumed_records=records))
                continue
            if records is not None:  # (a damaged results object is quarantined already)
                store.remove([store.shard_results(shard)])  # done again: damaged items redone
        rows = plan_rows(store, shard)
        writer = ShardWriter(store, shard, rows, qc_plan, parts, published)
        writer.summary.quarantined_parts += damaged
        writers[shard] = writer
        outcome.summaries.append(writer.summary)
        for row in rows:
            if row.row_index in writer.pending_rows:
                shard_of[row.row_index] = shard
                item = row.work_item()
                item.audio_dir = store.uri(store.round_audio_dir)  # where its rounds publish
                items.append(item)
    total = len(items)
    if items:
        with_clone = any(has_clone(item.edits) for item in items)
        counts = {"done": 0, "failed": 0}
        # the executor's round channel lives as long as this run of the shards, no longer
        with open_round_channel(executor) as channel:
            stages = build_stages(
                engine,
                rounds,
                with_clone,
                prompt_mode,
                qc_plan,
                judging=judging,
                limits=limits,
                records=channel.sink,
            )

            def finished(item: WorkItem) -> None:
                writer = writers[shard_of[item.row_index]]
                if writer.summary.first_done_s is None:
                    writer.summary.first_done_s = time.perf_counter() - started
                writer.add(item, take_records(channel, item))
                counts["done"] += 1
                counts["failed"] += int(item.failed)
                if writer.done:
                    writer.close()
                if progress is not None:
                    progress(counts["done"], total, counts["failed"])

            run_isolating(executor, stages, items, finished, channel)
            for item in items:  # an executor must hand back every item it was given
                if item.row_index in writers[shard_of[item.row_index]].pending_rows:
                    drop_rounds(item)
                    item.fail("lost_item", f"row {item.row_index}: item did not come back")
                    finished(item)
    for writer in writers.values():
        writer.close()  # idempotent for closed shards; catches shards with no pending items
        writer.summary.seconds = round(time.perf_counter() - started, 3)
    outcome.setups = dict(getattr(executor, "setups", {}))
    return outcome


def run_isolating(
    executor: Executor,
    stages: list[Stage],
    items: list[WorkItem],
    finished: Callable[[WorkItem], None],
    channel: RoundRecordChannel | None = None,
) -> None:
    """Run items; when the executor fails because worker processes keep dying, split what is
    left and run the halves again, so only the item that kills its worker fails. Each run of
    an item is a new attempt: the round channel drops an earlier attempt's records."""
    seen: set[int] = set()
    for item in items:
        item.attempt += 1
    try:
        # a stop whose exception a C callback swallowed (a signal inside soundfile's reads)
        # still stops the shard, whichever executor runs it
        with remember_stops():
            for item in executor.run(stages, items):
                seen.add(item.row_index)
                finished(item)
                check_stop()
    except Exception as exc:
        if not worker_died(exc):
            raise
        if channel is not None:
            channel.held()  # a dead channel is no worker's death: its own error ends the run
        rest = [item for item in items if item.row_index not in seen]
        if len(rest) == 1:
            item = rest[0]
            drop_rounds(item)
            item.fail("worker_died", f"row {item.row_index}: {_death_message(exc)}")
            finished(item)
            return
        half = len(rest) // 2
        run_isolating(executor, stages, rest[:half], finished, channel)
        run_isolating(executor, stages, rest[half:], finished, channel)


_DEATHS = ("RayActorError", "ActorDiedError", "WorkerCrashedError", "ActorUnavailableError",
           "NodeDiedError", "OutOfMemoryError", "ActorUnschedulableError")  # fmt: skip


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def worker_died(exc: BaseException) -> bool:
    """Whether an executor failure comes from a worker process that died (not a bug)."""
    for link in _chain(exc):
        if type(link).__name__ in _DEATHS or any(d in str(link)[:2000] for d in _DEATHS):
            return True
    return False


def _death_message(exc: BaseException) -> str:
    return (
        "the worker process running this clip died (also on retry); "
        f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    )
