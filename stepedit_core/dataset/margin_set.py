"""Margin sets: (neutral, edited) pairs of the catalog's clips, scored 1-10, as a dataset.

`build_margin_set(spec)`:
1. writes the derived manifest (pair_rows.py) to OUT/_datasets/ID/rows.parquet;
2. runs it as a normal durable run under the same run id (`run_job`, or the Prefect flow
   handed in as `run`), so a crash resumes exactly once;
3. pairs each row's neutral version (the source audio, or the round-0 clone) with its edited
   version (the delivered round), scores the pair (scorers.py) and writes
   RUN/dataset/sft.parquet, its data card RUN/dataset/README.md, and the review page.

Every (clip, attribute) gets a row in the set, failed ones included (`status`, `error_code`):
`kept` says which pairs are training data.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, BeforeValidator, Field, PlainSerializer, model_validator

from stepedit_core.catalog.access import AllowedRoots, default_root, storage_options_installed
from stepedit_core.dataset import card
from stepedit_core.dataset.choose_scorer import scorer_for
from stepedit_core.dataset.layout import SET_METADATA
from stepedit_core.dataset.pair_rows import (
    neutral_is_clone,
    pair_rows,
    read_source,
    source_columns,
)
from stepedit_core.dataset.scorers import SCORERS, ScorerUnavailable
from stepedit_core.dataset.sft import SetWriting, passed_columns, write_sft
from stepedit_core.foundation.edits import EditSpec, parse_edit, refusal
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.store import RunStore
from stepedit_core.judges.spec import JudgeSpec
from stepedit_core.lifecycle.job import JobSpec

Attribute = Annotated[EditSpec, BeforeValidator(parse_edit), PlainSerializer(str, return_type=str)]
DEFAULT_MIN_MARGIN = 6.0


class MarginSpec(BaseModel):
    """A margin set: the source manifest, the attributes, the scorer and threshold, and the
    run that makes the versions (`job`: its manifest is OUT/_datasets/ID/rows.parquet)."""

    manifest_uri: str
    attributes: tuple[Attribute, ...] = Field(min_length=1)
    min_margin: float = Field(DEFAULT_MIN_MARGIN, ge=1, le=10)
    scorer: str = "objective"
    dnsmos: bool = False  # denoise margins also count the DNSMOS gain (qc-heavy extra)
    judge: JudgeSpec | None = None  # scorer "judge": the audio model asked (never its key)
    margin_prompt: str | None = None  # scorer "judge": the prompt template (None: default)
    report: Literal["all", "index", "none"] = "index"  # review page media, as `stepedit run`
    job: JobSpec

    @model_validator(mode="after")
    def _check(self) -> MarginSpec:
        if self.scorer not in SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; available: {', '.join(SCORERS)}")
        if (self.scorer == "judge") != (self.judge is not None):
            raise ValueError("the judge scorer and --judge go together (--judge gemini|openai)")
        if self.judge is not None and self.judge.kind == "objective":
            raise ValueError("--judge objective is not a margin judge; use --scorer objective")
        names = [str(a) for a in self.attributes]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"attribute(s) given twice: {', '.join(repeated)}")
        for attribute in self.attributes:
            if attribute.type == "clone":
                raise ValueError("clone makes the neutral version; it is not an attribute")
        if self.job.iterations != 1:
            raise ValueError("a margin set edits each pair once (iterations 1)")
        return self

    @classmethod
    def create(
        cls,
        manifest_uri: str,
        attributes: list[str | EditSpec],
        out: str,
        run_id: str,
        min_margin: float = DEFAULT_MIN_MARGIN,
        scorer: str = "objective",
        report: str = "index",
        dnsmos: bool = False,
        judge: JudgeSpec | None = None,
        margin_prompt: str | None = None,
        **job: Any,
    ) -> MarginSpec:
        """The spec with its run: `job` takes JobSpec's fields (engine, models_dir, executor,
        seed, allow_roots, storage_options, overwrite...). Audio is read from the source
        manifest's folder unless `allow_roots` says otherwise."""
        store = RunStore(out, run_id)
        # the run's manifest is in OUT/_datasets/ID/: its default root would be that folder
        job["allow_roots"] = list(job.get("allow_roots") or [default_root(manifest_uri)])
        run = JobSpec(
            manifest_uri=store.uri(store.margin_rows),
            out=out,
            run_id=run_id,
            report="none",  # the page is built once the set is scored (it charts the margins)
            **job,
        )
        return cls(
            manifest_uri=manifest_uri,
            attributes=tuple(attributes),
            min_margin=min_margin,
            scorer=scorer,
            dnsmos=dnsmos,
            judge=judge,
            margin_prompt=margin_prompt,
            report=report,
            job=run,
        )

    def roots(self) -> AllowedRoots:
        return AllowedRoots.for_manifest(self.manifest_uri, self.job.allow_roots)


RunJob = Callable[[JobSpec], dict[str, Any]]


def check_attributes(spec: MarginSpec) -> None:
    """Refuse attributes the engine can not run or the scorer can not score (RunRefused),
    before any work: otherwise every pair of them would fail."""
    try:
        scorer = scorer_for(spec)
    except ScorerUnavailable as exc:
        raise RunRefused(str(exc)) from None
    engine = spec.job.engine
    problems = [f"attribute {a}: {p}" for a in spec.attributes if (p := refusal(engine, a))]
    problems += [p for a in spec.attributes if (p := scorer.refusal(a))]
    if problems:
        raise RunRefused("; ".join(problems))


def write_pair_rows(spec: MarginSpec) -> pa.Table:
    """Write OUT/_datasets/ID/rows.parquet, or check that an earlier attempt wrote the same rows
    (a run id resumes only the job it was started with)."""
    store = RunStore(spec.job.out, spec.job.run_id)
    table = pair_rows(read_source(spec.manifest_uri), spec.attributes, spec.job.engine)
    path = store.margin_rows
    if store.exists(path) and not spec.job.overwrite:
        earlier = store.read_table(path)
        if not earlier.equals(table):
            raise RunRefused(
                f"margin set {spec.job.run_id!r} under {spec.job.out} was started from another "
                "manifest or other attributes; pass --overwrite to start it afresh, or choose "
                "another --run-id"
            )
        return table
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    store.write_bytes(path, sink.getvalue())
    return table


def build_margin_set(
    spec: MarginSpec, run: RunJob | None = None, executor: Any = None
) -> dict[str, Any]:
    """Make (or resume) the margin set; returns its summary (also in the data card)."""
    with storage_options_installed(spec.job.storage_options, spec.job.storage_uris()):
        check_attributes(spec)
        write_pair_rows(spec)
        if run is None:
            from stepedit_core.lifecycle.run import run_job

            record = run_job(spec.job, executor=executor)
        else:
            record = run(spec.job)
        return write_margin_set(spec, record)


def write_margin_set(spec: MarginSpec, record: dict[str, Any]) -> dict[str, Any]:
    """Pair, score and write the set from the finished run, then its data card and the review
    page; returns the card's summary with the URIs written."""
    store = RunStore(spec.job.out, spec.job.run_id)
    writing = SetWriting(
        store=store,
        run_id=spec.job.run_id,
        scorer=scorer_for(spec),
        min_margin=spec.min_margin,
        roots=spec.roots(),
        clone=neutral_is_clone(spec.job.engine),
        passed=passed_columns(source_columns(spec.manifest_uri)),
    )
    path = store.margin_set
    counted = write_sft(writing, path, {SET_METADATA: _spec_json(spec)})
    with store.fs.open(path, "rb") as handle:
        columns = pq.read_schema(handle).names
    summary = card.summarize(counted, columns, spec, record)
    store.write_bytes(store.margin_set_card, card.data_card(summary).encode())
    if spec.report != "none":
        from stepedit_core.report import build_report

        summary["report"] = build_report(spec.job.out, spec.job.run_id, media=spec.report)
    summary["sft"] = store.uri(path)
    summary["card"] = store.uri(store.margin_set_card)
    return summary


def _spec_json(spec: MarginSpec) -> str:
    return json.dumps(
        {
            "source_manifest": spec.manifest_uri,
            "attributes": [str(a) for a in spec.attributes],
            "min_margin": spec.min_margin,
            "scorer": spec.scorer,
            "judge": [spec.judge.kind, spec.judge.model] if spec.judge else None,
            "dnsmos": spec.dnsmos,
            "engine": spec.job.engine,
        }
    )
