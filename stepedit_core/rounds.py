"""How rounds are laid out: load the clip, then (engine stages + round end) for each round.

Every executor runs the same flat list of stages that `build_stages` returns, so a round is
nothing more than the engine's stages followed by a `RoundEnd` that records the round and hands
its output to the next round. Rows whose edit chain starts with `clone` get a round 0 (zero-shot
TTS from the prompt clip), and their remaining edits run in rounds 1..N.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from stepedit_core import audio as audio_io
from stepedit_core.audit import seal
from stepedit_core.edits import EditSpec, format_chain
from stepedit_core.engines.base import Engine
from stepedit_core.qc import basic_metrics
from stepedit_core.stages import Resources, Stage, WorkItem, guard, timed


def round_edits(item: WorkItem, iteration: int | None = None) -> tuple[EditSpec, ...]:
    """The edits an item gets in a round: `clone` alone in round 0, the rest in rounds >= 1."""
    k = item.iteration if iteration is None else iteration
    if k == 0:
        return tuple(e for e in item.edits if e.type == "clone")
    return tuple(e for e in item.edits if e.type != "clone")


def has_clone(item: WorkItem) -> bool:
    return any(e.type == "clone" for e in item.edits)


def active(items: list[WorkItem]) -> list[WorkItem]:
    """Items an engine stage works on in this round: not failed and with edits in this round."""
    return [item for item in items if not item.failed and round_edits(item)]


def item_key(
    input_sha256: str, edit: str, iteration: int, engine: str, engine_version: str, seed: int
) -> str:
    """Names one clip-round: same input audio, edit, round, engine and seed -> same key."""
    material = json.dumps([input_sha256, edit, iteration, engine, engine_version, seed])
    return hashlib.sha256(material.encode()).hexdigest()


class LoadAudio(Stage):
    """Reads each clip from its URI; a missing, empty or non-audio file fails that row only."""

    name = "load"
    resources = Resources(cpus=0.25)
    needs_actor = False
    batch_size = 32

    def process_item(self, item: WorkItem) -> None:
        audio, data = audio_io.load(item.audio_uri)
        item.source_sha256 = audio_io.sha256_bytes(data)
        item.audio = audio
        item.original = audio
        item.state["input_sha256"] = item.source_sha256


class StartRound(Stage):
    """Sets the round number and the voice prompt (chain: this round's input; fixed: source)."""

    resources = Resources(cpus=0.25)
    needs_actor = False
    batch_size = 64

    def __init__(self, iteration: int, prompt_mode: str) -> None:
        self.iteration = iteration
        self.prompt_mode = prompt_mode
        self.name = f"start_round_{iteration}"

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        for item in items:
            item.iteration = self.iteration
            if not item.failed:
                item.prompt = item.original if self.prompt_mode == "fixed" else item.audio
        return items


class RoundEnd(Stage):
    """Records the round (FLAC bytes, hashes, tokens, metrics) and promotes output to input."""

    resources = Resources(cpus=0.25)
    needs_actor = False
    ends_round = True
    batch_size = 32

    def __init__(self, iteration: int, engine_name: str, engine_version: str) -> None:
        self.iteration = iteration
        self.engine_name = engine_name
        self.engine_version = engine_version
        self.name = f"round_end_{iteration}"

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        for item in items:
            edits = round_edits(item, self.iteration)
            if not edits or item.audio is None:
                continue  # nothing ran for this item in this round (or it never loaded)
            if item.records and item.records[-1]["status"] == "failed":
                continue  # a failure was recorded in an earlier round: nothing ran since
            with timed(item, "record"):
                record = guard(item, self._record, edits)
            if record is None:  # encoding the output failed: record the failure instead
                record = self._base(item, edits)
            # hash chain: a clip's first record links to its source file's sha256
            prev = item.records[-1]["record_sha256"] if item.records else item.source_sha256
            record = seal(record, prev or "")
            item.records.append(record)
            item.state = {"input_sha256": record.get("output_sha256")}
            item.timings = {}
            if not item.failed:
                item.audio, item.output = item.output, None
        return items

    def _base(self, item: WorkItem, edits: tuple[EditSpec, ...]) -> dict[str, Any]:
        edit = format_chain(edits)
        input_sha = item.state.get("input_sha256") or ""
        seed = item.seed + self.iteration
        return {
            "clip_id": item.clip_id,
            "row_index": item.row_index,
            "iteration": self.iteration,
            "edit": edit,
            "key": item_key(
                input_sha, edit, self.iteration, self.engine_name, self.engine_version, seed
            ),
            "input_sha256": input_sha,
            "output_sha256": None,
            "status": "failed" if item.failed else "ok",
            "error_code": item.error_code,
            "error": item.error,
            "engine": self.engine_name,
            "engine_version": self.engine_version,
            "seed": seed,
            "text": item.text,
            "timings_json": json.dumps({k: round(v, 6) for k, v in item.timings.items()}),
            "input_tokens": _tokens(item.state.get("input_tokens")),
            "output_tokens": _tokens(item.state.get("output_tokens")),
            "audio_flac": None,
            "sample_rate": None,
            "channels": None,
            "duration_in_s": round(item.audio.duration, 4) if item.audio is not None else None,
            "duration_s": None,
            "peak_dbfs": None,
            "rms_dbfs": None,
            "clipped_samples": None,
        }

    def _record(self, item: WorkItem, edits: tuple[EditSpec, ...]) -> dict[str, Any]:
        record = self._base(item, edits)
        if item.failed:
            return record
        if item.output is None:
            item.fail("no_output", f"engine stages produced no audio in round {self.iteration}")
            return self._base(item, edits)
        flac = audio_io.encode_flac(item.output)
        record.update(basic_metrics(item.output))
        record.update(
            audio_flac=flac,
            output_sha256=audio_io.sha256_bytes(flac),
            sample_rate=item.output.sample_rate,
            channels=item.output.channels,
        )
        return record


def _tokens(value: Any) -> list[int] | None:
    if value is None:
        return None
    return [int(v) for v in value]


def build_stages(
    engine: Engine, iterations: int, with_round0: bool, prompt_mode: str = "chain"
) -> list[Stage]:
    """The flat stage list an executor runs: load, then (start, engine stages, end) per round."""
    stages: list[Stage] = [LoadAudio()]
    first = 0 if with_round0 else 1
    for k in range(first, iterations + 1):
        stages.append(StartRound(k, prompt_mode))
        stages.extend(engine.stages())
        stages.append(RoundEnd(k, engine.name, engine.version))
    return stages
