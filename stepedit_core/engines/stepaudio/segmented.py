"""Chapters through the model: a clip longer than the segment length is edited in segments.

The model reads about 30 s per call well, so the tokenize stage splits a round's input that is
longer than `EngineOptions.segment_seconds` into segments, each a sub-item (a `WorkItem` of its
own, kept in the chapter's trace: `StepAudioTrace.segment_items`). Every stage of the engine
then runs the sub-items of all chapters in its batch as ordinary items, `batch_size` at a time
(the LLM batches segments of several chapters together), and the decode stage stitches the
edited segments back into the chapter's output (stitch.py: inside the pauses, room tone
matched, equal-power crossfades). A segment that fails fails its chapter, with the segment named.

Where the cuts are and what each segment says (segment_texts.py):

1. rounds after a segmented round: the previous round's segments, at their output offsets, with
   the text they say after that round's edit;
2. the row's `segments` column (first round only: its times are the source's);
3. with `--asr-models`: a split plan cut in pauses (segments.py, silero-vad) and the ASR's word
   timings mapped onto it;
4. otherwise the row fails `missing_segment_text`.

The chapter stays one item of the run: resume and incremental runs work per chapter. The round's
record lists its segments (`segments_json`): offsets in the round's input, in the source and in
the output, texts, a key per segment and hashes of each segment's input and output samples.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np

from stepedit_core.catalog.segment_texts import (
    SegmentsError,
    SegmentText,
    parse_segments,
    pieces_of,
    texts_from_words,
)
from stepedit_core.catalog.segments import NoPause, Piece, plan
from stepedit_core.engines.options import EngineOptions
from stepedit_core.engines.stepaudio.trace import (
    EditedSegment,
    SegmentPlace,
    StepAudioTrace,
    segment_items,
)
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.stages import Stage, WorkItem, guard

MODEL_WINDOW_S = 30.0  # the longest segment the model is given (its authors' advice per call)


def run_stage(stage: Stage, options: EngineOptions, work: list[WorkItem]) -> None:
    """`stage` over `work`: plain clips as they are, chapters as their segments."""
    if stage.name == "tokenize":
        for item in work:
            guard(item, split, options)
    plain = [i for i in work if not i.failed and segment_items(i) is None]
    chapters = [i for i in work if not i.failed and segment_items(i) is not None]
    if plain:
        stage.process_live(plain)
    subs = [s for c in chapters for s in _subs(c) if not s.failed]
    size = max(1, stage.batch_size)
    for start in range(0, len(subs), size):
        stage.process_live(subs[start : start + size])
    for chapter in chapters:
        _fold(chapter)
        if stage.name == "decode" and not chapter.failed:
            guard(chapter, join)


def split(item: WorkItem, options: EngineOptions) -> None:
    """Make the chapter's segments (nothing for a clip that fits one segment)."""
    if item.audio is None or item.audio.duration <= options.segment_seconds:
        return
    audio = item.samples("audio")  # read here when the round's input is a reference
    assert audio is not None
    # fixed prompt mode: each segment's voice prompt is the source's piece
    fixed = item.prompt is not None and item.prompt is not item.audio
    prompt = item.samples("prompt") if fixed else None
    rate = audio.sample_rate
    planned = _from_previous_round(item, rate) or _from_column(item, audio)
    if planned is None:
        planned = _from_words(item, audio, options)
    StepAudioTrace.of(item).segment_items = [
        _sub_item(item, audio, prompt, k, piece, text, source)
        for k, (piece, text, source) in enumerate(planned)
    ]


Planned = list[tuple[Piece, SegmentText, tuple[float, float]]]


def _subs(chapter: WorkItem) -> list[WorkItem]:
    subs = segment_items(chapter)
    assert subs is not None, "a chapter has segment items"
    return subs


def _from_previous_round(item: WorkItem, rate: int) -> Planned | None:
    trace = item.trace
    previous = trace.previous_segments if isinstance(trace, StepAudioTrace) else None
    if not previous:
        return None
    planned: Planned = []
    for seg in previous:
        piece = Piece(round(seg.output_start_s * rate), round(seg.output_end_s * rate))
        text = SegmentText(seg.output_start_s, seg.output_end_s, seg.text or "")
        planned.append((piece, text, (seg.place.source_start_s, seg.place.source_end_s)))
    if planned and planned[-1][0].end != item.audio.frames:  # type: ignore[union-attr]
        last = planned[-1]
        planned[-1] = (Piece(last[0].start, item.audio.frames), last[1], last[2])  # type: ignore[union-attr]
    return planned


def _from_column(item: WorkItem, audio: Audio) -> Planned | None:
    if item.segments is None or item.sealed.count:
        return None  # the column's times are the source's: they hold in the first round only
    try:
        texts = parse_segments(item.segments)
        pieces = pieces_of(texts, audio.frames, audio.sample_rate)
    except SegmentsError as exc:
        raise ItemFailure("invalid_segments", f"field 'segments': {exc}") from None
    for k, piece in enumerate(pieces, start=1):
        seconds = (piece.end - piece.start) / audio.sample_rate
        if seconds > MODEL_WINDOW_S:
            raise ItemFailure(
                "invalid_segments",
                f"field 'segments': piece {k} spans {seconds:.1f} s (cut between entries), "
                f"over the model's {MODEL_WINDOW_S:g} s window; expected shorter entries",
            )
    rate = audio.sample_rate
    return [(p, t, (p.start / rate, p.end / rate)) for p, t in zip(pieces, texts, strict=True)]


def _from_words(item: WorkItem, audio: Audio, options: EngineOptions) -> Planned:
    if options.asr_models is None:
        raise ItemFailure(
            "missing_segment_text",
            f"the clip is {audio.duration:.1f} s, longer than one segment "
            f"({options.segment_seconds:g} s), and each segment needs its own transcript: "
            "expected a `segments` column (JSON list of {start, end, text}) or --asr-models "
            "DIR for word timings",
        )
    from stepedit_core.quality import qc
    from stepedit_core.words.asr import shared_asr

    rate = audio.sample_rate
    try:
        pieces = plan(
            audio.frames, rate, qc.speech_spans(audio.samples, rate), options.segment_seconds
        )
    except NoPause as exc:
        raise ItemFailure("no_pause", f"splitting into segments: {exc}") from None
    words = shared_asr(options.asr_models).transcribe(audio.samples, rate, item.language).words
    texts = texts_from_words(words, pieces, rate)
    return [
        (p, SegmentText(p.start / rate, p.end / rate, t), (p.start / rate, p.end / rate))
        for p, t in zip(pieces, texts, strict=True)
    ]


def _sub_item(
    item: WorkItem,
    chapter: Audio,
    source_prompt: Audio | None,
    k: int,
    piece: Piece,
    text: SegmentText,
    source: tuple[float, float],
) -> WorkItem:
    audio = Audio(chapter.samples[piece.start : piece.end], chapter.sample_rate)
    prompt = None  # chain mode: each segment is its own voice prompt
    if source_prompt is not None:  # fixed: the source's piece
        p = source_prompt
        prompt = Audio(
            p.samples[round(source[0] * p.sample_rate) : round(source[1] * p.sample_rate)],
            p.sample_rate,
        )
    spec = replace(
        item.spec,
        clip_id=f"{item.clip_id}#{k + 1}",
        text=text.text or None,
        target_text=text.target_text,
        segments=None,
        seed=(item.seed + 1_000_003 * (k + 1)) % (1 << 62),
    )
    sub = WorkItem(
        spec,
        text_source=item.text_source,
        round=item.round,
        round_edits=item.round_edits,
        audio=audio,
        prompt=prompt,
    )
    StepAudioTrace.of(sub).segment = SegmentPlace(
        index=k,
        start_s=round(piece.start / chapter.sample_rate, 6),
        end_s=round(piece.end / chapter.sample_rate, 6),
        source_start_s=round(source[0], 6),
        source_end_s=round(source[1], 6),
        input_sha256=samples_sha256(audio.samples),
    )
    return sub


def _place(sub: WorkItem) -> SegmentPlace:
    trace = sub.trace
    assert isinstance(trace, StepAudioTrace) and trace.segment is not None, "a segment item"
    return trace.segment


def _fold(chapter: WorkItem) -> None:
    """The segments' timings into the chapter's; a failed segment fails the chapter."""
    subs = _subs(chapter)
    for sub in subs:
        for name, spent in sub.timings.items():
            chapter.timings[name] = chapter.timings.get(name, 0.0) + spent
        sub.timings.clear()
    failed = next((s for s in subs if s.failed), None)
    if failed is not None:
        seg = _place(failed)
        chapter.fail(
            str(failed.error_code),
            f"segment {seg.index + 1} of {len(subs)} ({seg.start_s:.1f}-"
            f"{seg.end_s:.1f} s): {failed.error}",
        )


def join(chapter: WorkItem) -> None:
    """The chapter's output: its edited segments stitched; its record's segment list."""
    from stepedit_core.catalog.stitch import stitch
    from stepedit_core.quality import qc

    subs = _subs(chapter)
    outputs = [s.output for s in subs]
    if any(o is None for o in outputs):
        raise ItemFailure("no_audio", "a segment came back from decoding without audio")
    rates = {o.sample_rate for o in outputs}  # type: ignore[union-attr]
    if len(rates) != 1:
        raise ItemFailure("bad_decode", f"segments decoded at different rates {sorted(rates)}")
    rate = rates.pop()
    samples, _ = stitch([o.samples for o in outputs], rate, qc.speech_spans)  # type: ignore[union-attr]
    chapter.set_output(Audio(samples, rate))
    _fold_traces(chapter, subs, rate)
    if any(spec.kind.changes_text for spec in chapter.round_edits):
        chapter.text = " ".join(s.text for s in subs if s.text) or chapter.text


def _fold_traces(chapter: WorkItem, subs: list[WorkItem], rate: int) -> None:
    """The chapter's trace from its segments': the segment list, their codes and passes end to
    end; the sub-items (and their audio) go no further: the record keeps the list."""
    listed, at = [], 0
    for sub in subs:
        place = _place(sub)
        assert sub.output is not None
        frames = sub.output.frames
        listed.append(
            EditedSegment(
                place=place,
                output_start_s=round(at / rate, 6),
                output_end_s=round((at + frames) / rate, 6),
                output_sha256=samples_sha256(sub.output.samples),
                text=sub.text,
                key=segment_key(chapter, place.index, place.input_sha256),
            )
        )
        at += frames
    traces = [_trace(sub) for sub in subs]
    trace = StepAudioTrace.of(chapter)
    trace.edited_segments = listed
    trace.input_tokens = [c for t in traces for c in t.input_tokens or []]
    trace.output_tokens = [c for t in traces for c in t.output_tokens or []]
    trace.passes = [
        replace(entry, segment=_place(sub).index + 1)
        for sub, sub_trace in zip(subs, traces, strict=True)
        for entry in sub_trace.passes or []
    ]
    trace.instruction, trace.model_fingerprint = traces[0].instruction, traces[0].model_fingerprint
    trace.segment_items = None


def _trace(sub: WorkItem) -> StepAudioTrace:
    trace = sub.trace
    assert isinstance(trace, StepAudioTrace), "a segment item carries the engine's trace"
    return trace


def segment_key(chapter: WorkItem, index: int, input_sha256: str) -> str:
    """Names one segment of one clip-round: the chapter's input, the round, the edits, the
    segment's place and its audio."""
    material = json.dumps(
        [
            chapter.input_sha256,
            chapter.round,
            [str(e) for e in chapter.round_edits],
            chapter.round_seed,
            index,
            input_sha256,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def samples_sha256(samples: np.ndarray) -> str:
    """sha256 of samples as little-endian float32 (frames, channels)."""
    return hashlib.sha256(np.ascontiguousarray(samples, dtype="<f4").tobytes()).hexdigest()
