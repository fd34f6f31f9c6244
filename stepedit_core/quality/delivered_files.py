"""The files a clip is delivered as, when they are not the chosen round's FLAC byte for byte.

With `--deliver-format wav|mp3`, or a profile that limits a file's length (ACX: 120 minutes),
the chosen round is turned into the files that ship:

- a clip longer than the profile allows is split in pauses (segments.plan) into numbered parts,
  `<row>-<clip>.part01.mp3`, `.part02.mp3`, ..., each given the profile's head and tail of room
  tone where the cut left less (made from the part's own pauses, at its own floor);
- each file is encoded (encoding.py); for MP3 under a profile with a sample-peak limit, the
  encoded file is decoded back and trimmed until its own peak meets the limit;
- QC checks what ships: the decoded file is measured (level, peaks, floor, head and tail) and
  checked against the profile, with the metrics that compare against the source (drift, format,
  similarity) taken from the round. A clip passes only when every part passes.

A round that travels by reference (an object in the run's store) goes through `package_file`:
speech found, parts cut, edges and level, encoding and the decoded file's QC all run a block at a
time from the object to local scratch files, which the run then uploads, so a chapter of any
length is delivered in the memory of a few blocks; `package` does the same for a round held in
memory, with the same results.

ACX's MP3 files are all mono (one channel layout for every file of a run, as ACX asks).
Every file's sha256 is recorded in the output manifest (`delivered_files`), so `stepedit verify`
checks the delivered files themselves.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np

from stepedit_core.catalog.segments import plan
from stepedit_core.foundation.audio import Audio, decode, sha256_bytes
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.retry import retrying
from stepedit_core.quality import qc
from stepedit_core.quality.delivery import (
    LOUDNESS_OPTION_PROFILES,
    Profile,
    QcPlan,
    check,
    get_profile,
)
from stepedit_core.quality.edges import conform_edges, edge_plan
from stepedit_core.quality.encoding import (
    DeliverFormat,
    EncodedFile,
    encode_file,
    encode_under_peak,
)
from stepedit_core.signal.blocks import BlockWriter, FileReader, file_info, file_sha256, read_blocks
from stepedit_core.signal.level_blocks import Leveled, match_level_blocks, write_level_matched
from stepedit_core.signal.loudness import match_level, target_for
from stepedit_core.signal.meters import LevelMeter
from stepedit_core.signal.room_tone import (
    join_room_tone,
    pause_level_db,
    pause_level_of,
    plan_join,
    room_tone_power,
    synth_room_tone,
)
from stepedit_core.signal.vad import SPEECH_MIN_SILENCE_S, Spans, shared_vad, speech_spans

WINDOW_MARGIN_DB = 0.5  # a part brought into the level window lands this far inside it


@dataclass
class DeliveredFile:
    path: str  # inside the run store
    data: bytes | Path  # the file's bytes, or a local file holding them (delivered in blocks)
    start_s: float
    end_s: float
    trim_db: float

    @property
    def sha256(self) -> str:
        if isinstance(self.data, Path):
            return file_sha256(self.data)
        return sha256_bytes(self.data)


@dataclass
class Delivery:
    files: list[DeliveredFile]
    qc_pass: bool | None = None  # None: no profile, or the round's own verdict holds
    qc_reasons: str | None = None

    def files_json(self, uri: Callable[[str], str]) -> str:
        """[{uri, sha256, start_s, end_s, trim_db}, ...] for the output manifest."""
        return json.dumps(
            [
                {
                    "uri": uri(f.path),
                    "sha256": f.sha256,
                    "start_s": f.start_s,
                    "end_s": f.end_s,
                    "trim_db": round(f.trim_db, 3),
                }
                for f in self.files
            ]
        )


def deliver_format(plan_: QcPlan) -> DeliverFormat:
    mono = plan_.profile == "acx" and plan_.deliver_format == "mp3"
    return DeliverFormat(plan_.deliver_format, plan_.mp3_bitrate, mono)


def needs_packaging(plan_: QcPlan, duration_s: float | None) -> bool:
    """Whether the delivered files differ from the round's FLAC."""
    return plan_.deliver_format != "flac" or needs_split(plan_, duration_s)


def needs_split(plan_: QcPlan, duration_s: float | None) -> bool:
    """Whether the clip is longer than the profile allows one file to be (parts)."""
    limit = get_profile(plan_.profile).max_duration_s
    return limit is not None and duration_s is not None and duration_s > limit


def package_file(
    source: str,
    folder: Path,
    path_for: Callable[[str, int | None], str],
    plan_: QcPlan,
    round_metrics: dict | None = None,
    measure: bool = True,
    max_duration_s: float | None = None,
) -> Delivery:
    """`package` of a round held in a file or object (`source`, a path or URI), in blocks: each
    file is encoded into `folder` (local scratch) and, for a lossy format, measured as decoded,
    one block at a time, so memory does not grow with the clip. A clip longer than the
    profile's limit (`max_duration_s` when given) is split in pauses into parts as `package`
    does, each part streamed from the round's file."""
    folder.mkdir(parents=True, exist_ok=True)
    local, downloaded = local_file(source, folder)
    try:
        return _package_local(
            local, folder, path_for, plan_, round_metrics, measure, max_duration_s
        )
    finally:
        if downloaded:
            local.unlink(missing_ok=True)  # a downloaded copy: only the delivered files are kept


def _package_local(
    local: Path,
    folder: Path,
    path_for: Callable[[str, int | None], str],
    plan_: QcPlan,
    round_metrics: dict | None,
    measure: bool,
    max_duration_s: float | None,
) -> Delivery:
    profile = get_profile(plan_.profile)
    fmt = deliver_format(plan_)
    info = file_info(local)
    limit = max_duration_s if max_duration_s is not None else profile.max_duration_s
    pieces = [(0, info.frames)]
    if limit is not None and info.frames / info.sample_rate > limit:
        spans = _speech_in_blocks(read_blocks(local), info.sample_rate, info.channels)
        room = (profile.head_target_s or 0.0) + (profile.tail_target_s or 0.0)  # edges added
        pieces = [
            (p.start, p.end) for p in plan(info.frames, info.sample_rate, spans, limit - room)
        ]
    split = len(pieces) > 1
    files, reasons, passed = [], [], True
    check_files = measure and profile.name != "none" and (fmt.lossy or split)
    for number, (start, end) in enumerate(pieces, 1):
        part = local
        if split:
            part = folder / f"{uuid.uuid4().hex}.wav"
            _write_part(local, start, end, profile, part)
        target = folder / f"{uuid.uuid4().hex}.{fmt.ext}"
        if check_files:
            encoded, ok, why = deliver_file(part, target, plan_, round_metrics, force_check=split)
            passed = passed and bool(ok)
            label = f"part {number}: " if split else ""
            reasons += [label + r for r in (why.split("; ") if why else [])]
        else:
            encoded = encode_file(part, target, fmt, profile.sample_peak_max_dbfs)
        if split:
            part.unlink(missing_ok=True)
        name = path_for(fmt.ext, number if split else None)
        rate = info.sample_rate
        files.append(
            DeliveredFile(
                name, target, round(start / rate, 3), round(end / rate, 3), encoded.trim_db
            )
        )
    if not check_files:
        return Delivery(files)
    return Delivery(files, passed, "; ".join(reasons) or None)


def _speech_in_blocks(blocks: Iterable[np.ndarray], rate: int, channels: int) -> Spans:
    """silero-vad speech spans of a signal fed a block at a time (as `speech_spans`)."""
    finder = shared_vad().finder(rate, channels, SPEECH_MIN_SILENCE_S)
    for block in blocks:
        finder.feed(block)
    return finder.finish()


class _FileFrames:
    """Frames `start`..`stop` of an open file, sliced like an array (what room tone's
    measurements read: one pause at a time)."""

    def __init__(self, reader: FileReader, start: int, stop: int) -> None:
        self.reader, self.start = reader, start
        self.shape = (stop - start, reader.channels)

    def __getitem__(self, index: slice) -> np.ndarray:
        low, high, _ = index.indices(self.shape[0])
        return self.reader.read(self.start + low, self.start + high)


def _write_part(source: Path, start: int, end: int, profile: Profile, target: Path) -> None:
    """Frames `start`..`end` of `source` as a float WAV (`target`), given the profile's head
    and tail of room tone and brought into its level window (the same level match and
    limiter) as `_room_tone_edges` and `_into_window` do in memory, a block at a time."""
    info = file_info(source)
    rate, channels = info.sample_rate, info.channels
    spans = _speech_in_blocks(read_blocks(source, start=start, stop=end), rate, channels)
    with FileReader(source) as reader:
        frames = _FileFrames(reader, start, end)
        lead, trail, body, join = np.zeros((0, channels), np.float32), None, (start, end), None
        if (profile.head_s is not None or profile.tail_s is not None) and spans:
            power = room_tone_power(frames, rate, spans)  # type: ignore[arg-type]
            level = pause_level_of(lambda a, b: frames[a:b], end - start, rate, spans)
            level = level if level is not None and level > -150 else -66.0
            head_cut, tail_cut, head_pad, tail_pad = edge_plan(end - start, rate, spans, profile)
            body = (start + head_cut, end - tail_cut)
            shifted = [(a - head_cut, b - head_cut) for a, b in spans]
            head = synth_room_tone(head_pad, rate, power, level, 2, channels)
            tail = synth_room_tone(tail_pad, rate, power, level, 3, channels)
            join = plan_join(head, tail, body[1] - body[0], rate, shifted)
            lead, trail = (join.lead, join.trail) if join.fade else (head, tail)

        def stream() -> Iterator[np.ndarray]:
            yield lead
            at = 0
            for block in read_blocks(source, start=body[0], stop=body[1]):
                yield join.apply(block, at) if join is not None and join.fade else block
                at += block.shape[0]
            if trail is not None:
                yield trail

        meter = LevelMeter()
        for block in stream():
            meter.feed(block)
        window = _window_target(meter.rms_db, profile)
        if window is None:
            with BlockWriter(target, rate, channels, format="WAV", subtype="FLOAT") as writer:
                for block in stream():
                    writer.write(block)
            return
        try:
            leveled = match_level_blocks(stream, rate, channels, profile.name, *window)
        except ItemFailure:  # out of reach: the part is left as it is, its QC says why
            leveled = Leveled(0.0, 1.0)
        ceiling = target_for(profile.name)[2]
        write_level_matched(stream, target, rate, channels, leveled, ceiling, subtype="FLOAT")


def _window_target(rms_db: float, profile: Profile) -> tuple[float, tuple[float, float]] | None:
    """(target, window) that `_into_window` levels a part to, None when it is inside."""
    if profile.rms_range_db is None or profile.name not in LOUDNESS_OPTION_PROFILES:
        return None
    low = profile.rms_range_db[0] + WINDOW_MARGIN_DB
    high = profile.rms_range_db[1] - WINDOW_MARGIN_DB
    if low <= rms_db <= high:
        return None
    return (low if rms_db < low else high), (low, high)


def local_file(source: str, folder: Path) -> tuple[Path, bool]:
    """A local path holding `source`: the path itself, or (True) a copy of a remote object
    made in chunks in `folder` (soundfile reads local files)."""
    fs, path = fsspec.core.url_to_fs(source)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if {"file", "local"} & set(protocols):
        return Path(path), False
    local = folder / f"{uuid.uuid4().hex}.flac"
    retrying(lambda: fs.get_file(path, str(local)), f"reading {source}")
    return local, True


def package(
    flac: bytes,
    path_for: Callable[[str, int | None], str],
    plan_: QcPlan,
    round_metrics: dict | None = None,
    measure: bool = True,
    max_duration_s: float | None = None,
) -> Delivery:
    """The files for one clip: `path_for(ext, part)` names each (part None: a single file).
    `measure`: decode and check each file against the profile (the files are the same either
    way: a resumed run republishing committed files skips it). `max_duration_s`: the longest
    file, when not the profile's."""
    audio = decode(flac, "<round>")
    profile = get_profile(plan_.profile)
    fmt = deliver_format(plan_)
    pieces = [(0, audio.frames)]
    limit = max_duration_s if max_duration_s is not None else profile.max_duration_s
    if limit is not None and audio.duration > limit:
        spans = speech_spans(audio.samples, audio.sample_rate)
        room = (profile.head_target_s or 0.0) + (profile.tail_target_s or 0.0)  # edges added
        pieces = [
            (p.start, p.end) for p in plan(audio.frames, audio.sample_rate, spans, limit - room)
        ]
    files, reasons, passed = [], [], True
    check_files = measure and profile.name != "none" and (fmt.lossy or len(pieces) > 1)
    for number, (start, end) in enumerate(pieces, 1):
        part = Audio(audio.samples[start:end], audio.sample_rate)
        if len(pieces) > 1:
            part = _into_window(_room_tone_edges(part, profile), profile)
        data, decoded, trim = encode_under_peak(part, fmt, profile.sample_peak_max_dbfs)
        name = path_for(fmt.ext, number if len(pieces) > 1 else None)
        rate = audio.sample_rate
        files.append(DeliveredFile(name, data, round(start / rate, 3), round(end / rate, 3), trim))
        if check_files:
            verdict = check(_metrics(decoded, round_metrics), profile)
            passed = passed and verdict.passed
            label = f"part {number}: " if len(pieces) > 1 else f"delivered {fmt.ext}: "
            reasons += [label + r for r in verdict.reasons]
    if not check_files:
        return Delivery(files)
    return Delivery(files, passed, "; ".join(reasons) or None)


def deliver_file(
    source: str | Path,
    target: str | Path,
    plan_: QcPlan,
    round_metrics: dict | None = None,
    spans: list[tuple[int, int]] | None = None,
    force_check: bool = False,
) -> tuple[EncodedFile, bool | None, str | None]:
    """One delivered file from a round's audio file, in blocks (any length up to the profile's
    limit; a longer clip goes through `package`): encoded, and for a lossy format checked
    against the profile as decoded. `spans`: the round's speech (frames at the round's rate;
    MP3 is 44.1 kHz, so they are rescaled). Returns the file, its verdict and reasons (None:
    not checked, as in `package`)."""
    profile = get_profile(plan_.profile)
    fmt = deliver_format(plan_)
    encoded = encode_file(source, target, fmt, profile.sample_peak_max_dbfs)
    if profile.name == "none" or not (fmt.lossy or force_check):
        return encoded, None, None
    if spans is not None:
        scale = file_info(target).sample_rate / file_info(source).sample_rate
        spans = [(round(a * scale), round(b * scale)) for a, b in spans]
    merged = dict(round_metrics or {})
    measured = qc.measure_file(target, spans=spans).metrics
    merged.update({k: v for k, v in measured.items() if v is not None})
    if round_metrics is not None and (
        round_metrics.get("sample_rate_hz") != measured["sample_rate_hz"]
        or round_metrics.get("channels") != measured["channels"]
    ):
        merged["format_matches_source"] = 0  # resampled or mixed down for delivery
    verdict = check(merged, profile)
    label = "" if force_check else f"delivered {fmt.ext}: "  # a part is labelled by number
    reasons = [label + reason for reason in verdict.reasons]
    return encoded, verdict.passed, "; ".join(reasons) or None


def _room_tone_edges(part: Audio, profile: Profile) -> Audio:
    """A part cut in a pause starts or ends with only part of that pause: give it the
    profile's head and tail of room tone (made from its own pauses, at its own floor), as
    mastering does for a whole clip."""
    if profile.head_s is None and profile.tail_s is None:
        return part
    rate = part.sample_rate
    spans = speech_spans(part.samples, rate)
    if not spans:
        return part
    power = room_tone_power(part.samples, rate, spans)
    level = pause_level_db(part.samples, rate, spans)
    samples, spans, head_pad, tail_pad = conform_edges(part.samples, rate, spans, profile)
    level = level if level is not None and level > -150 else -66.0
    channels = samples.shape[1]
    head = synth_room_tone(head_pad, rate, power, level, 2, channels)
    tail = synth_room_tone(tail_pad, rate, power, level, 3, channels)
    return Audio(join_room_tone(head, samples, tail, rate, spans), rate)


def _into_window(part: Audio, profile: Profile) -> Audio:
    """A part's own level into the profile's RMS window, by the same level match and true-peak
    limiter as the `loudness` edit (a part of a chapter can sit a little off the level the
    whole chapter was mastered to). A part that cannot be brought in is left as it is: its QC
    says why."""
    if profile.rms_range_db is None or profile.name not in LOUDNESS_OPTION_PROFILES:
        return part
    samples = part.samples
    rms = 10 * np.log10(max(1e-20, float(np.mean(np.square(samples, dtype=np.float64)))))
    low = profile.rms_range_db[0] + WINDOW_MARGIN_DB
    high = profile.rms_range_db[1] - WINDOW_MARGIN_DB
    if low <= rms <= high:
        return part
    target = low if rms < low else high
    try:
        leveled, _ = match_level(samples, part.sample_rate, profile.name, target, (low, high))
    except ItemFailure:
        return part
    return Audio(leveled, part.sample_rate)


def _metrics(decoded: Audio, round_metrics: dict | None) -> dict:
    """The decoded file's own metrics over the round's source comparisons (drift, ratio,
    similarity: a split clip's parts are compared as the whole round was)."""
    merged = dict(round_metrics or {})
    changed = round_metrics is not None and (
        round_metrics.get("sample_rate_hz") != decoded.sample_rate
        or round_metrics.get("channels") != decoded.channels
    )
    merged.update({k: v for k, v in qc.measure(decoded).metrics.items() if v is not None})
    if changed:
        merged["format_matches_source"] = 0  # resampled or mixed down for delivery
    return merged
