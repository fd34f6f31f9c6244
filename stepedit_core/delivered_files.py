"""The files a clip is delivered as, when they are not the chosen round's FLAC byte for byte.

With `--deliver-format wav|mp3`, or a profile that limits a file's length (ACX: 120 minutes),
the chosen round is turned into the files that ship:

- a clip longer than the profile allows is split in pauses (segments.plan) into numbered parts,
  `<row>-<clip>.part01.mp3`, `.part02.mp3`, ...;
- each file is encoded (encoding.py); for MP3 under a profile with a sample-peak limit, the
  encoded file is decoded back and trimmed until its own peak meets the limit;
- QC checks what ships: the decoded file is measured (level, peaks, floor, head and tail) and
  checked against the profile, with the metrics that compare against the source (drift, format,
  similarity) taken from the round. A clip passes only when every part passes.

ACX's MP3 files are all mono (one channel layout for every file of a run, as ACX asks).
Every file's sha256 is recorded in the output manifest (`delivered_files`), so `stepedit verify`
checks the delivered files themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from stepedit_core import qc
from stepedit_core.audio import Audio, decode, sha256_bytes
from stepedit_core.delivery import QcPlan, check, get_profile
from stepedit_core.encoding import DeliverFormat, encode_under_peak
from stepedit_core.segments import plan


@dataclass
class DeliveredFile:
    path: str  # inside the run store
    data: bytes
    start_s: float
    end_s: float
    trim_db: float

    @property
    def sha256(self) -> str:
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
    limit = get_profile(plan_.profile).max_duration_s
    return plan_.deliver_format != "flac" or (
        limit is not None and duration_s is not None and duration_s > limit
    )


def package(
    flac: bytes,
    path_for: Callable[[str, int | None], str],
    plan_: QcPlan,
    round_metrics: dict | None = None,
) -> Delivery:
    """The files for one clip: `path_for(ext, part)` names each (part None: a single file)."""
    audio = decode(flac, "<round>")
    profile = get_profile(plan_.profile)
    fmt = deliver_format(plan_)
    pieces = [(0, audio.frames)]
    if profile.max_duration_s is not None and audio.duration > profile.max_duration_s:
        spans = qc.speech_spans(audio.samples, audio.sample_rate)
        pieces = [
            (p.start, p.end)
            for p in plan(audio.frames, audio.sample_rate, spans, profile.max_duration_s)
        ]
    files, reasons, passed = [], [], True
    check_files = profile.name != "none" and (fmt.lossy or len(pieces) > 1)
    for number, (start, end) in enumerate(pieces, 1):
        part = Audio(audio.samples[start:end], audio.sample_rate)
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
