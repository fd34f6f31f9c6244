"""The stage contract every engine and executor agrees on.

A stage declares what it needs (`Resources`) and how many items it wants per call
(`batch_size`), loads its models once in `setup()`, and turns a batch of `WorkItem`s into a batch
of `WorkItem`s. A stage never raises for one bad item: it marks that item failed and goes on, so
one broken clip can not take down a batch that holds thousands of good ones.

`Stage.process_batch` owns the loop: it picks the items the stage works on (`select`), times
them and turns any exception into a failure of that item alone. A stage writes only what is its
own: `process_item` for one item, or `process_live` for a batched call. Engine stages
(`EngineStage`) see only the items that have edits in the current round; the round machinery
writes the round's number and edits on each item (`WorkItem.round`, `WorkItem.round_edits`), so
engines never need to know how rounds are laid out.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.audio_ref import BY_REFERENCE_OVER_S, AudioRef, load_audio, publish
from stepedit_core.foundation.clip_spec import ClipSpec
from stepedit_core.foundation.edits import EditSpec
from stepedit_core.foundation.failures import ItemFailure, check_code
from stepedit_core.foundation.traces import EngineTrace

if TYPE_CHECKING:
    from stepedit_core.judges.verdict import Verdict
    from stepedit_core.quality.qc import Reference
    from stepedit_core.words.timing import OutputWords


@dataclass(frozen=True)
class Resources:
    """What one actor of a stage needs. GPUs may be fractional (several actors per GPU)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 0


@dataclass
class RoundQc:
    """What the QC stage measured on a round's output, for its record (rounds.py)."""

    basic: dict[str, Any]  # peak, RMS, clipping, duration (records.py columns)
    profile: str
    qc_json: str | None = None
    qc_pass: bool | None = None
    qc_reasons: str | None = None


@dataclass(frozen=True)
class SealedRound:
    """What an item keeps of a round it sealed: enough to link the next round's record to it
    and to judge its output. The record itself went to the run's round channel as the round
    ended (lifecycle/round_handoff.py)."""

    round: int
    ok: bool
    record_sha256: str
    output_sha256: str | None
    audio_ref: str | None  # the output's object, run-relative
    audio_flac: bytes | None = None  # only for rounds sealed outside a run (no store)


@dataclass
class SealedRounds:
    """The rounds an item sealed in this attempt: how many, and the last two. Its size does not
    grow with the rounds: the shard writer finds the records by the item's row and attempt and
    checks them against `count` and the last record's hash."""

    count: int = 0
    last: SealedRound | None = None
    before: SealedRound | None = None  # the round sealed before `last`

    def add(self, sealed: SealedRound) -> None:
        self.count += 1
        self.before, self.last = self.last, sealed


@dataclass
class WorkItem:
    """One clip travelling through the rounds of one run: its row (`spec`, never changed) and
    the facts of its current round.

    `audio` is the current round's input; a stage that edits sets `output`. Between rounds the
    executor's round boundary turns `output` into a record and into the next round's `audio`.
    `round` and `round_edits` are facts the round machinery writes at the start of each round
    (round 0 is a clone round; `round_edits` is empty when the item has nothing to do in it).
    `trace` is the engine's own data between the stages of a round (tokens, passes: each engine
    declares its type, see traces.py); `words` the words of the round's output. `text` is what
    the round's input says: the row's text, a transcript the ASR filled in, or after an edit
    that changes the words the text of its output.

    Audio fields hold samples (`Audio`) or a reference to a published object (`AudioRef`,
    audio_ref.py): round audio travels by reference, so the item stays small however long the
    clip and however many rounds. A stage that needs samples calls `samples(field)`.
    `audio_dir` is the folder of the run's store that this item's round audio is published to
    (set when the item is loaded; None keeps audio in memory, as unit tests do). Round records
    do not ride on the item either: each is handed to the run's round channel as its round
    ends (lifecycle/round_handoff.py), and the item keeps only `sealed`.
    """

    spec: ClipSpec
    round: int = 1
    round_edits: tuple[EditSpec, ...] = ()
    text_source: str | None = None  # "manifest", or "asr" when a transcript filled `text`
    source_sha256: str | None = None
    input_sha256: str | None = None  # the round input's hash (the source file's in round one)
    audio: Audio | AudioRef | None = None
    original: Audio | AudioRef | None = None  # the source clip, kept for prompt-fixed rounds
    prompt: Audio | AudioRef | None = None  # voice prompt of this round (voice cloning)
    output: Audio | AudioRef | None = None
    next_audio: Audio | AudioRef | None = None  # the next round's input, when not `output`
    audio_dir: str | None = None
    # which submission of this item to an executor this is: a clip run again after its
    # worker died seals its rounds under a new attempt, so the failed one's records never mix in
    attempt: int = 0
    sealed: SealedRounds = field(default_factory=SealedRounds)
    # speech spans (start, end frames) of `output`, when the stage that made it found them:
    # QC of the round reuses them instead of running the VAD again
    output_speech: list[tuple[int, int]] | None = None
    round_qc: RoundQc | None = None  # the QC stage's measurement of this round's output
    qc_reference: Reference | None = None  # the source's QC analysis, made once per clip
    trace: EngineTrace | None = None
    words: OutputWords | None = None
    timings: dict[str, float] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)  # judges' verdicts on its rounds
    stopped_by: str | None = None  # why the clip gets no further rounds (a judge agreed)
    error_code: str | None = None
    error: str | None = None
    text: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.text = self.spec.text

    # the row's facts, read through the spec (an item can not change them)
    @property
    def row_index(self) -> int:
        return self.spec.row_index

    @property
    def clip_id(self) -> str:
        return self.spec.clip_id

    @property
    def audio_uri(self) -> str:
        return self.spec.audio_uri

    @property
    def edits(self) -> tuple[EditSpec, ...]:
        return self.spec.edits

    @property
    def target_text(self) -> str | None:
        return self.spec.target_text

    @property
    def segments(self) -> str | None:
        return self.spec.segments

    @property
    def language(self) -> str | None:
        return self.spec.language

    @property
    def speaker(self) -> str | None:
        return self.spec.speaker

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def failed(self) -> bool:
        return self.error_code is not None

    def fail(self, code: str, message: str) -> None:
        self.error_code, self.error = check_code(code), message

    def set_output(self, audio: Audio) -> None:
        """The round's output from an engine. A long one (over `BY_REFERENCE_OVER_S`) of an item
        with a store is published here, where it was made, so it reaches QC and the next round
        by reference rather than as samples through every hop."""
        if self.audio_dir is not None and audio.duration > BY_REFERENCE_OVER_S:
            self.output = publish(audio, self.audio_dir)
        else:
            self.output = audio

    def samples(self, name: str = "audio") -> Audio | None:
        """The samples of audio field `name` ("audio", "original", "prompt", "output"),
        read from its object when the field holds a reference."""
        return load_audio(getattr(self, name))

    @property
    def round_seed(self) -> int:
        """The seed of this clip in this round (stable across reruns and batches)."""
        return self.seed + self.round


class Stage:
    """One step of an engine. Subclasses set `name`, `resources`, `batch_size`."""

    name: str = "stage"
    resources: Resources = Resources()
    batch_size: int = 16
    # True: runs in an actor pool (setup() once per actor). False: a stateless task per batch.
    needs_actor: bool = True
    ends_round: bool = False  # the last stage of a round (executors may pause between rounds)
    # at most this many actors (None: as many as the CPUs allow); a stage that holds a global
    # limit itself, such as a judge's requests in flight, asks for one
    max_actors: int | None = None

    def setup(self) -> None:  # noqa: B027 - optional hook, most CPU stages have nothing to load
        """Load models and other heavy state. Called once per actor, before any batch."""

    def select(self, items: list[WorkItem]) -> list[WorkItem]:
        """The items this stage works on: those not failed (failures pass through untouched)."""
        return [item for item in items if not item.failed]

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        """The loop every stage shares: selected items go to `process_live`; all come back."""
        work = self.select(items)
        if work:
            self.process_live(work)
        return items

    def process_live(self, items: list[WorkItem]) -> None:
        """Default: one item at a time, timed, a failure confined to its item. Batched stages
        override this and use `guard`/`timed` themselves."""
        for item in items:
            with timed(item, self.name):
                guard(item, self.process_item)

    def process_item(self, item: WorkItem) -> None:
        raise NotImplementedError(
            f"{type(self).__name__} must implement process_item or process_live"
        )


class EngineStage(Stage):
    """A stage of an engine: works on the items that have edits in the current round."""

    def select(self, items: list[WorkItem]) -> list[WorkItem]:
        return [item for item in items if not item.failed and item.round_edits]


def guard(item: WorkItem, func: Any, *args: Any) -> Any:
    """Run `func(item, *args)`; turn any exception into a failure on that item alone."""
    try:
        return func(item, *args)
    except ItemFailure as exc:
        item.fail(exc.code, str(exc))
    except Exception as exc:  # noqa: BLE001 - the per-item error channel must catch everything
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        item.fail("stage_error", f"{type(exc).__name__} in stage: {last}")
    return None


class timed:  # noqa: N801 - used as a context manager, reads like a function
    """Add the wall time of a block to `item.timings[name]`."""

    def __init__(self, item: WorkItem, name: str) -> None:
        self.item, self.name = item, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        spent = time.perf_counter() - self.start
        self.item.timings[self.name] = self.item.timings.get(self.name, 0.0) + spent
