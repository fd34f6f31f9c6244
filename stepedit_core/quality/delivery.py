"""Delivery profiles (what a file must meet to ship), the pass/fail check, and best-round choice.

A profile is data: the limits of one delivery spec, plus the targets the `loudness` edit masters
to. `check(metrics, profile)` compares the metrics of `stepedit_core.quality.qc.measure` with a
profile's
limits and names every metric that fails, its value and the limit. A limit whose metric could
not be measured fails too (a file that cannot be verified does not ship). `select_best` picks
the round to deliver among a clip's rounds (see its docstring for the documented score).

Limits, from the published specs (ACX audio submission requirements, EBU R128, Netflix):
- acx: RMS -23..-18 dB, sample peak <= -3 dBFS, noise floor <= -60 dB (ACX Check's method,
  warning below -90 dB: dead silence), 0.5-1 s of room tone at the head and 1-5 s at the tail,
  no clipped samples, at most 120 minutes.
- r128: integrated loudness -23 +-0.5 LUFS, true peak <= -1 dBTP, no clipped samples, the source's
  sample rate and channel count.
- netflix: -27 +-2 LUFS (measured with BS.1770 gating over the whole clip, not dialogue gating),
  true peak <= -2 dBTP, no clipped samples, the source's sample rate and channels, and duration
  within 40 ms of the source (one frame at 25 fps: dubbed dialogue is sync-locked).
- none: nothing is checked; every round passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from stepedit_core.quality.config import QualityConfig

Metrics = Mapping[str, float | int | None]


@dataclass(frozen=True)
class Profile:
    """Limits of one delivery spec (None: not part of the spec) and the mastering targets."""

    name: str
    description: str
    # level: ACX measures plain RMS over the file, broadcast specs BS.1770 integrated loudness
    rms_range_db: tuple[float, float] | None = None
    lufs_target: float | None = None
    lufs_tolerance: float | None = None
    sample_peak_max_dbfs: float | None = None
    true_peak_max_dbtp: float | None = None
    noise_floor_max_db: float | None = None
    noise_floor_warn_below_db: float | None = None
    head_s: tuple[float, float] | None = None  # room tone before the first word
    tail_s: tuple[float, float] | None = None  # room tone after the last word
    max_clipped_samples: int | None = None
    max_drift_s: float | None = None  # |duration - source duration|
    same_format_as_source: bool = False  # sample rate and channel count
    max_duration_s: float | None = None
    # mastering targets (what `loudness=<profile>` aims for, inside the limits above)
    level_target: float | None = None  # dB RMS (rms_range_db) or LUFS
    noise_floor_target_db: float | None = None
    head_target_s: float | None = None
    tail_target_s: float | None = None

    @property
    def masters_room_tone(self) -> bool:
        """Whether mastering into this profile also shapes the floor and the head and tail."""
        return self.noise_floor_max_db is not None or self.head_s is not None


PROFILES: dict[str, Profile] = {
    "acx": Profile(
        name="acx",
        description="ACX / Audible audiobook (also Findaway / Spotify)",
        rms_range_db=(-23.0, -18.0),
        sample_peak_max_dbfs=-3.0,
        noise_floor_max_db=-60.0,
        noise_floor_warn_below_db=-90.0,
        head_s=(0.5, 1.0),
        tail_s=(1.0, 5.0),
        max_clipped_samples=0,
        max_duration_s=120 * 60.0,
        level_target=-20.0,
        noise_floor_target_db=-66.0,
        head_target_s=0.75,
        tail_target_s=1.5,
    ),
    "r128": Profile(
        name="r128",
        description="EBU R128 broadcast",
        lufs_target=-23.0,
        lufs_tolerance=0.5,
        true_peak_max_dbtp=-1.0,
        max_clipped_samples=0,
        same_format_as_source=True,
        level_target=-23.0,
    ),
    "netflix": Profile(
        name="netflix",
        description="Netflix dubbing (sync-locked dialogue)",
        lufs_target=-27.0,
        lufs_tolerance=2.0,
        true_peak_max_dbtp=-2.0,
        max_clipped_samples=0,
        max_drift_s=0.040,
        same_format_as_source=True,
        level_target=-27.0,
    ),
    "none": Profile(name="none", description="no delivery spec: every round passes"),
}

# the `loudness` edit's options that master into a delivery profile
LOUDNESS_OPTION_PROFILES = {"acx": "acx", "ebu": "r128", "ebu-r128": "r128", "netflix": "netflix"}


SELECT_MODES = ("last", "best")


def _setting(name: str) -> Any:
    """A plan field that holds the job's setting `name`, with the setting's declared default
    (`asr_models` belongs to the words group and defaults to none)."""
    declaration = QualityConfig.model_fields.get(name)
    default = None if declaration is None else declaration.get_default()
    return field(default=default, metadata={"setting": name})


@dataclass(frozen=True)
class QcPlan:
    """What a run measures and checks in every round, and which round it delivers.

    Cheap metrics are always measured; `profile` (other than `none`) adds a pass/fail verdict
    with reasons; `heavy` adds DNSMOS and speaker similarity (the `qc-heavy` extra); `select`
    `best` delivers the best passing round by `select_best`, `last` the last round.
    `deliver_format` / `mp3_bitrate`: the delivered files' format (see delivered_files.py).
    Each field names the declared setting it holds (config.py); `QcPlan.of(job)` reads them."""

    profile: str = _setting("qc")
    heavy: bool = _setting("qc_heavy")
    select: str = _setting("select")
    # the word-error gate (stepedit_core/words/gate.py): an ASR folder measures `wer` in every
    # round; `max_wer` fails a round over it, whatever the profile
    asr_models: str | None = _setting("asr_models")
    max_wer: float | None = _setting("qc_max_wer")
    deliver_format: str = _setting("deliver_format")
    mp3_bitrate: int = _setting("mp3_bitrate")

    @classmethod
    def of(cls, settings: Any) -> QcPlan:
        """The plan of a job: anything that reads its settings by name (`job.qc`)."""
        return cls(**{f.name: getattr(settings, f.metadata["setting"]) for f in fields(cls)})

    @classmethod
    def settings(cls) -> tuple[str, ...]:
        """The names of the settings the plan holds."""
        return tuple(f.metadata["setting"] for f in fields(cls))

    @property
    def gives_verdict(self) -> bool:
        return self.profile != "none" or self.max_wer is not None

    def __post_init__(self) -> None:
        get_profile(self.profile)
        if self.select not in SELECT_MODES:
            raise ValueError(f"unknown selection {self.select!r}; valid: {', '.join(SELECT_MODES)}")
        if self.profile == "acx" and self.deliver_format == "mp3" and self.mp3_bitrate < 192:
            raise ValueError(f"ACX takes MP3 at 192 kbps or more, not {self.mp3_bitrate} kbps")


def get_profile(profile: str | Profile) -> Profile:
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile.lower()]
    except KeyError:
        raise ValueError(
            f"unknown delivery profile {profile!r}; valid profiles: {', '.join(PROFILES)}"
        ) from None


def profile_for_loudness(option: str) -> Profile | None:
    """The delivery profile a `loudness=<option>` edit masters into (None for plain LUFS)."""
    name = LOUDNESS_OPTION_PROFILES.get(option)
    return PROFILES[name] if name else None


@dataclass(frozen=True)
class Verdict:
    """Pass or fail of one round against one profile. `reasons` name each failed limit;
    `warnings` are things the spec flags without rejecting (ACX: a dead-silent floor)."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check(metrics: Metrics, profile: str | Profile, max_wer: float | None = None) -> Verdict:
    """Compare `metrics` (keys of `stepedit_core.quality.qc.measure`) with the profile's limits, and
    the round's word error rate with `max_wer` when given."""
    spec = get_profile(profile)
    reasons: list[str] = []
    warnings: list[str] = []

    def value(key: str, what: str) -> float | None:
        got = metrics.get(key)
        if got is None or (isinstance(got, float) and not math.isfinite(got)):
            reasons.append(f"{what} ({key}) could not be measured; {spec.name} requires it")
            return None
        return float(got)

    def at_most(key: str, what: str, limit: float, unit: str) -> None:
        got = value(key, what)
        if got is not None and got > limit:
            reasons.append(f"{what} ({key}) is {got:g} {unit}, above the limit of {limit:g} {unit}")

    def within(key: str, what: str, low: float, high: float, unit: str) -> None:
        got = value(key, what)
        if got is not None and not low <= got <= high:
            reasons.append(f"{what} ({key}) is {got:g} {unit}, outside {low:g}..{high:g} {unit}")

    if spec.rms_range_db is not None:
        within("rms_dbfs", "RMS level", *spec.rms_range_db, "dB")
    if spec.lufs_target is not None and spec.lufs_tolerance is not None:
        low, high = spec.lufs_target - spec.lufs_tolerance, spec.lufs_target + spec.lufs_tolerance
        within("loudness_lufs", "integrated loudness", low, high, "LUFS")
    if spec.sample_peak_max_dbfs is not None:
        at_most("peak_dbfs", "sample peak", spec.sample_peak_max_dbfs, "dBFS")
    if spec.true_peak_max_dbtp is not None:
        at_most("true_peak_dbtp", "true peak", spec.true_peak_max_dbtp, "dBTP")
    if spec.noise_floor_max_db is not None:
        at_most("noise_floor_db", "noise floor", spec.noise_floor_max_db, "dB")
        floor = metrics.get("noise_floor_db")
        warn = spec.noise_floor_warn_below_db
        if warn is not None and floor is not None and floor < warn:
            warnings.append(
                f"noise floor (noise_floor_db) is {floor:g} dB, below {warn:g} dB: dead silence "
                "sounds unnatural, keep room tone"
            )
    if spec.head_s is not None:
        within("head_silence_s", "room tone at the head", *spec.head_s, "s")
    if spec.tail_s is not None:
        within("tail_silence_s", "room tone at the tail", *spec.tail_s, "s")
    if spec.max_clipped_samples is not None:
        got = value("clipped_samples", "clipped samples")
        if got is not None and got > spec.max_clipped_samples:
            reasons.append(
                f"clipped samples (clipped_samples) is {got:g}, above the limit of "
                f"{spec.max_clipped_samples}"
            )
    if spec.max_drift_s is not None:
        got = value("drift_s", "duration drift against the source")
        if got is not None and abs(got) > spec.max_drift_s:
            reasons.append(
                f"duration drift against the source (drift_s) is {got * 1000:+.1f} ms, beyond "
                f"+-{spec.max_drift_s * 1000:g} ms"
            )
    if spec.same_format_as_source:
        got = value("format_matches_source", "sample rate and channels against the source")
        if got is not None and not got:
            reasons.append(
                "sample rate or channels (format_matches_source) differ from the source: "
                f"{metrics.get('sample_rate_hz')} Hz x {metrics.get('channels')} ch"
            )
    if spec.max_duration_s is not None:
        at_most("duration_s", "duration", spec.max_duration_s, "s")
    if max_wer is not None:
        got = value("wer", "word error rate against the text")
        if got is not None and got > max_wer:
            reasons.append(
                f"word error rate against the text (wer) is {got:g}, above the limit of {max_wer:g}"
            )
    return Verdict(passed=not reasons, reasons=reasons, warnings=warnings)


# --- best round ------------------------------------------------------------------------------

# Score bases, best first: the first one every candidate has decides. Higher score is better.
SCORE_BASES = ("speaker_similarity", "ltas_distance_db", "target_deviation")


@dataclass(frozen=True)
class Selection:
    """The round to deliver: its `round`, whether it passed, the score and why."""

    round: int
    passed: bool
    basis: str
    score: float | None
    reason: str


def score(metrics: Metrics, profile: str | Profile, basis: str) -> float | None:
    """One round's score on one basis (higher is better), None when the basis is not measured.

    - speaker_similarity: cosine similarity of the round's and the source's speaker embeddings
      (resemblyzer, heavy QC): long edit chains drift in timbre, this measures it directly.
    - ltas_distance_db: minus the distance between the round's and the source's long-term
      spectra over speech (cheap, always measured when the source is known): a proxy for
      timbre drift.
    - target_deviation: minus how far the round is from the profile's targets, each term in
      units of its tolerance (level; drift when the profile limits it); 0 for profile `none`.
    """
    spec = get_profile(profile)
    if basis == "speaker_similarity":
        got = metrics.get("speaker_similarity")
        return None if got is None else float(got)
    if basis == "ltas_distance_db":
        got = metrics.get("ltas_distance_db")
        return None if got is None else -float(got)
    if basis == "target_deviation":
        total = 0.0
        if spec.rms_range_db is not None and spec.level_target is not None:
            level = metrics.get("rms_dbfs")
            if level is None:
                return None
            half = (spec.rms_range_db[1] - spec.rms_range_db[0]) / 2
            total += abs(float(level) - spec.level_target) / half
        if spec.lufs_target is not None and spec.lufs_tolerance:
            level = metrics.get("loudness_lufs")
            if level is None:
                return None
            total += abs(float(level) - spec.lufs_target) / spec.lufs_tolerance
        if spec.max_drift_s:
            drift = metrics.get("drift_s")
            if drift is None:
                return None
            total += abs(float(drift)) / spec.max_drift_s
        return -total
    raise ValueError(f"unknown score basis {basis!r}; valid: {', '.join(SCORE_BASES)}")


def select_best(
    rounds: Sequence[tuple[int, Metrics]], profile: str | Profile, max_wer: float | None = None
) -> Selection | None:
    """Pick the round to deliver among (round, metrics) pairs of one clip.

    Candidates are the rounds that pass `check`; when none passes, all rounds are candidates
    and the selection says it failed. The score basis is the first of SCORE_BASES that every
    candidate has measured, so rounds are never compared on different scales. The highest score
    wins; ties go to the later round (more of the requested edit applied). A round whose word
    error rate is over `max_wer` is never a candidate. None when `rounds` is empty or every
    round is over `max_wer`.
    """
    spec = get_profile(profile)
    verdicts = {number: check(metrics, spec, max_wer) for number, metrics in rounds}
    passing = [(it, m) for it, m in rounds if verdicts[it].passed]
    candidates = passing or [(it, m) for it, m in rounds if not _over(m, max_wer)]
    if not candidates:
        return None
    for basis in SCORE_BASES:
        scores = [(score(m, spec, basis), it) for it, m in candidates]
        if all(value is not None for value, _ in scores):
            break
    else:  # no common basis: deliver the last round
        basis, scores = "last", [(None, it) for _, it in candidates]
    if basis == "last":
        best_score, best = None, max(it for _, it in scores)
    else:
        best_score, best = max(scores, key=lambda pair: (pair[0], pair[1]))
    reason = _selection_reason(spec, basis, best, best_score, len(passing), len(rounds))
    if max_wer is not None:
        reason += f" (and --qc-max-wer {max_wer:g})"
    return Selection(best, bool(passing), basis, best_score, reason)


def _over(metrics: Metrics, max_wer: float | None) -> bool:
    got = metrics.get("wer")
    return max_wer is not None and got is not None and float(got) > max_wer


def _selection_reason(
    spec: Profile, basis: str, best: int, value: float | None, passing: int, total: int
) -> str:
    if basis == "speaker_similarity":
        why = f"highest speaker similarity to the source ({value:.3f})"
    elif basis == "ltas_distance_db":
        why = f"closest long-term spectrum to the source ({-(value or 0.0):.2f} dB apart)"
    elif basis == "target_deviation":
        why = f"closest to the {spec.name} targets (deviation {-(value or 0.0):.2f} tolerances)"
    else:
        why = "the last round (no score measured on every round)"
    if passing:
        return f"round {best}: {why} among {passing} of {total} rounds passing {spec.name}"
    return f"round {best}: no round passes {spec.name}; {why} among all {total} rounds"
