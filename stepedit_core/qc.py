"""Per-round measurements: the basic ones kept in every round record, and delivery QC.

`basic_metrics` is cheap and stored in every round record. `measure` adds what a delivery spec
checks (see `stepedit_core.delivery`), offline, with models that ship inside wheels only:

- duration_s, peak_dbfs, rms_dbfs, clipped_samples: `basic_metrics` (sample peak, plain RMS)
- sample_rate_hz, channels: the format
- loudness_lufs: BS.1770 integrated loudness (pyloudnorm, gated)
- loudness_range_lu: EBU Tech 3342 loudness range (pyloudnorm)
- true_peak_dbtp: BS.1770 true peak, 4x oversampled (soxr), all channels
- noise_floor_db: ACX Check's floor, the RMS of the quietest 0.4 s window, windows every 0.1 s
- speech_ratio: the share of the clip silero-vad marks as speech
- head_silence_s, tail_silence_s: time before the first and after the last speech (silero-vad)
- duration_ratio, drift_s: duration / source duration, duration - source duration (s)
- format_matches_source: 1 when sample rate and channels equal the source's, else 0
- ltas_distance_db: RMS difference (dB, over 20 log-spaced bands from 125 Hz to 7.6 kHz, level
  removed) of the long-term speech spectra of the round and the source; a cheap timbre-drift
  measure (it also sees EQ, denoising and heavy limiting)
- dnsmos_ovrl, dnsmos_sig, dnsmos_bak, dnsmos_p808: DNSMOS (speechmos' ONNX models), heavy
- speaker_similarity: cosine similarity of GE2E speaker embeddings (resemblyzer), heavy

A metric that is not measured is None, and `QcReport.notes[key]` says why (heavy QC off, the
`qc-heavy` extra not installed, no source given, clip too short...). Nothing is ever estimated
in place of a missing model.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from stepedit_core.audio import Audio
from stepedit_core.signal.meters import (
    MAX_LOUDNESS_CHANNELS,
    LevelMeter,
    LoudnessMeter,
    feed_all,
    noise_floor_db,
    true_peak_dbtp,
)
from stepedit_core.signal.resample import mono, resample
from stepedit_core.signal.vad import SPEECH_MIN_SILENCE_S, speech_spans

__all__ = [  # the signal meters QC reports, importable from here as before
    "SPEECH_MIN_SILENCE_S",
    "noise_floor_db",
    "speech_spans",
    "true_peak_dbtp",
]
ANALYSIS_RATE = 16000  # VAD, spectra and the heavy models work on 16 kHz mono
LTAS_BANDS = 20
LTAS_RANGE_HZ = (125.0, 7600.0)  # every band holds at least one FFT bin
LTAS_FFT = 1024
DNSMOS_WINDOW = 144160  # 9.01 s at 16 kHz: the input length the DNSMOS models take
HEAVY_EXTRA = "pip install 'stepedit[qc-heavy]'"

Metrics = dict[str, float | int | None]


def _db(value: float) -> float | None:
    return round(20.0 * math.log10(value), 2) if value > 0 else None


def basic_metrics(audio: Audio) -> dict[str, float | int | None]:
    """Duration, sample peak and RMS (dBFS, unweighted) and the count of clipped samples."""
    meter = LevelMeter()
    feed_all(audio.samples, meter)
    return level_metrics(meter, audio.duration)


def level_metrics(meter: LevelMeter, duration_s: float) -> dict[str, float | int | None]:
    return {
        "duration_s": round(duration_s, 4),
        "peak_dbfs": _db(meter.peak),
        "rms_dbfs": _db(meter.rms),
        "clipped_samples": meter.clipped,
    }


@dataclass(frozen=True)
class QcReport:
    """`metrics` (keys in the module docstring) and, per metric that is None, why."""

    metrics: Metrics
    notes: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"metrics": self.metrics, "notes": self.notes}, sort_keys=True)


@dataclass(frozen=True)
class Reference:
    """What a round is compared with, computed once per clip from its source audio."""

    duration_s: float
    sample_rate: int
    channels: int
    ltas_db: np.ndarray | None
    embedding: np.ndarray | None = None
    embedding_note: str | None = None


# --- the signal measurements ----------------------------------------------------------------


def loudness_lufs(samples: np.ndarray, sample_rate: int) -> tuple[float | None, str | None]:
    """BS.1770 integrated loudness, or None and why not."""
    samples = samples.reshape(samples.shape[0], -1)
    if samples.shape[1] > MAX_LOUDNESS_CHANNELS:
        return None, "BS.1770 loudness is defined for at most 5 channels"
    meter = LoudnessMeter(sample_rate, samples.shape[1])
    feed_all(samples, meter)
    return loudness_of(meter)


def loudness_range_lu(samples: np.ndarray, sample_rate: int) -> tuple[float | None, str | None]:
    """EBU Tech 3342 loudness range, or None and why not."""
    samples = samples.reshape(samples.shape[0], -1)
    if samples.shape[1] > MAX_LOUDNESS_CHANNELS:
        return None, "BS.1770 loudness is defined for at most 5 channels"
    meter = LoudnessMeter(sample_rate, samples.shape[1])
    feed_all(samples, meter)
    return loudness_range_of(meter)


def loudness_of(meter: LoudnessMeter) -> tuple[float | None, str | None]:
    if meter.frames <= 0.4 * meter.rate:
        return None, "shorter than one 0.4 s BS.1770 block"
    value = meter.integrated()
    if not math.isfinite(value):
        return None, "below the BS.1770 absolute gate (-70 LUFS): silent"
    return round(value, 2), None


def loudness_range_of(meter: LoudnessMeter) -> tuple[float | None, str | None]:
    try:
        value = meter.loudness_range()
    except ValueError as error:
        return None, f"no loudness range: {error}"
    if not math.isfinite(value):
        return None, "too quiet for a loudness range"
    return round(value, 2), None


def mono_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    mono16 = resample(mono(samples)[:, None], sample_rate, ANALYSIS_RATE)[:, 0]
    return np.ascontiguousarray(mono16, dtype=np.float32)


def long_term_spectrum(mono16: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray | None:
    """Mean power in LTAS_BANDS log-spaced bands (dB, mean over bands removed) over the speech
    spans (frames at 16 kHz) of a 16 kHz mono signal; None when there is too little speech."""
    pieces = [mono16[a:b] for a, b in spans if b - a >= LTAS_FFT]
    if not pieces:
        return None
    window = np.hanning(LTAS_FFT).astype(np.float32)
    hop = LTAS_FFT // 2
    power = np.zeros(LTAS_FFT // 2 + 1)
    count = 0
    for piece in pieces:
        starts = np.arange(0, piece.shape[0] - LTAS_FFT + 1, hop)
        for block in range(0, starts.shape[0], 1024):  # bounded memory on hour-long speech
            index = starts[block : block + 1024, None] + np.arange(LTAS_FFT)
            frames = piece[index] * window
            power += np.sum(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
            count += frames.shape[0]
    freqs = np.fft.rfftfreq(LTAS_FFT, 1.0 / ANALYSIS_RATE)
    edges = np.geomspace(*LTAS_RANGE_HZ, LTAS_BANDS + 1)
    band = np.digitize(freqs, edges) - 1
    levels = np.array([power[band == b].sum() / count for b in range(LTAS_BANDS)], dtype=np.float64)
    levels = 10 * np.log10(levels + 1e-20)
    return levels - levels.mean()


# --- heavy models (the qc-heavy extra) --------------------------------------------------------


def _missing(*modules: str) -> list[str]:
    return [name for name in modules if importlib.util.find_spec(name) is None]


def dnsmos_unavailable() -> str | None:
    missing = _missing("speechmos", "onnxruntime", "librosa")
    return f"{', '.join(missing)} not installed ({HEAVY_EXTRA})" if missing else None


def similarity_unavailable() -> str | None:
    missing = _missing("resemblyzer", "librosa", "webrtcvad")
    return f"{', '.join(missing)} not installed ({HEAVY_EXTRA})" if missing else None


@lru_cache(maxsize=1)
def _dnsmos_model() -> Any:
    from pathlib import Path

    import speechmos
    from speechmos.dnsmos import DNSMOS

    models = Path(speechmos.__file__).parent / "dnsmos_models"
    return DNSMOS(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))


def _import_resemblyzer() -> Any:
    with warnings.catch_warnings():  # webrtcvad's pkg_resources import warns on every load
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import resemblyzer
    return resemblyzer


@lru_cache(maxsize=1)
def _voice_encoder() -> Any:
    return _import_resemblyzer().VoiceEncoder(device="cpu", verbose=False)


def dnsmos(mono16: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 (sig, bak, ovrl) and P.808 scores of 16 kHz mono audio.

    The models take 9.01 s windows: a shorter clip is repeated to fill one (as the DNSMOS
    reference does), a longer one is cut into back-to-back windows, the last one aligned to the
    end, and the scores are averaged over windows."""
    model = _dnsmos_model()
    audio = np.clip(mono16, -1.0, 1.0).astype(np.float32)
    if audio.shape[0] < DNSMOS_WINDOW:
        audio = np.resize(audio, DNSMOS_WINDOW)  # np.resize repeats the clip
    starts = list(range(0, audio.shape[0] - DNSMOS_WINDOW + 1, DNSMOS_WINDOW))
    if starts[-1] + DNSMOS_WINDOW < audio.shape[0]:
        starts.append(audio.shape[0] - DNSMOS_WINDOW)
    scores = []
    for start in starts:
        segment = audio[start : start + DNSMOS_WINDOW]
        mel = model.audio_melspec(audio=segment[:-160]).astype(np.float32)[np.newaxis]
        p808 = float(model.p808_onnx_sess.run(None, {"input_1": mel})[0][0][0])
        raw = model.onnx_sess.run(None, {"input_1": segment[np.newaxis]})[0][0]
        sig, bak, ovrl = model.get_polyfit_val(raw[0], raw[1], raw[2], False)
        scores.append((float(ovrl), float(sig), float(bak), p808))
    mean = np.mean(np.array(scores), axis=0)
    return {
        "dnsmos_ovrl": round(float(mean[0]), 3),
        "dnsmos_sig": round(float(mean[1]), 3),
        "dnsmos_bak": round(float(mean[2]), 3),
        "dnsmos_p808": round(float(mean[3]), 3),
    }


def speaker_embedding(mono16: np.ndarray) -> np.ndarray:
    """GE2E speaker embedding (unit length) of 16 kHz mono speech."""
    preprocess_wav = _import_resemblyzer().preprocess_wav
    wav = preprocess_wav(np.asarray(mono16, dtype=np.float32), source_sr=ANALYSIS_RATE)
    if wav.shape[0] < ANALYSIS_RATE // 2:
        raise ValueError("less than 0.5 s of speech for a speaker embedding")
    return np.asarray(_voice_encoder().embed_utterance(wav), dtype=np.float64)


# --- putting it together ------------------------------------------------------------------------


def reference(source: Audio, heavy: bool = False, vad: Any = None) -> Reference:
    """The source-side analysis of a clip; compute once, pass to `measure` for every round."""
    mono = mono_16k(source.samples, source.sample_rate)
    spans16 = _to_16k(speech_spans(source.samples, source.sample_rate, vad), source.sample_rate)
    embedding, note = None, None
    if heavy:
        note = similarity_unavailable()
        if note is None:
            try:
                embedding = speaker_embedding(mono)
            except ValueError as error:
                note = f"source: {error}"
    return Reference(
        duration_s=source.duration,
        sample_rate=source.sample_rate,
        channels=source.channels,
        ltas_db=long_term_spectrum(mono, spans16),
        embedding=embedding,
        embedding_note=note,
    )


def measure(
    audio: Audio,
    source: Audio | Reference | None = None,
    heavy: bool = False,
    vad: Any = None,
) -> QcReport:
    """All QC metrics of one round. `source`: the clip's source audio (or its `reference`) for
    drift, format and similarity; `heavy`: also run DNSMOS and speaker similarity (the
    `qc-heavy` extra); `vad`: a loaded `SileroVad` to reuse (default: one per process)."""
    samples, rate = audio.samples, audio.sample_rate
    metrics: Metrics = dict(basic_metrics(audio))
    notes: dict[str, str] = {}
    metrics["sample_rate_hz"] = rate
    metrics["channels"] = audio.channels

    for key, (value, note) in (
        ("loudness_lufs", loudness_lufs(samples, rate)),
        ("loudness_range_lu", loudness_range_lu(samples, rate)),
    ):
        metrics[key] = value
        if note:
            notes[key] = note
    peak = true_peak_dbtp(samples, rate) if samples.size else float("-inf")
    metrics["true_peak_dbtp"] = round(peak, 2) if math.isfinite(peak) else None
    if metrics["true_peak_dbtp"] is None:
        notes["true_peak_dbtp"] = "digital silence"
    metrics["noise_floor_db"] = noise_floor_db(samples, rate)

    spans = speech_spans(samples, rate, vad) if samples.shape[0] else []
    speech = sum(end - start for start, end in spans)
    metrics["speech_ratio"] = round(speech / samples.shape[0], 4) if samples.shape[0] else None
    if spans:
        metrics["head_silence_s"] = round(spans[0][0] / rate, 3)
        metrics["tail_silence_s"] = round((samples.shape[0] - spans[-1][1]) / rate, 3)
    else:
        metrics["head_silence_s"] = metrics["tail_silence_s"] = None
        notes["head_silence_s"] = notes["tail_silence_s"] = "silero-vad found no speech"

    mono = mono_16k(samples, rate) if samples.shape[0] else np.zeros(0, np.float32)
    ref = reference(source, heavy, vad) if isinstance(source, Audio) else source
    _compare(metrics, notes, audio, mono, _to_16k(spans, rate), ref)
    _heavy(metrics, notes, mono, ref, heavy)
    return QcReport(metrics, notes)


def _to_16k(spans: list[tuple[int, int]], rate: int) -> list[tuple[int, int]]:
    scale = ANALYSIS_RATE / rate
    return [(int(a * scale), int(b * scale)) for a, b in spans]


def _compare(
    metrics: Metrics,
    notes: dict[str, str],
    audio: Audio,
    mono: np.ndarray,
    spans16: list[tuple[int, int]],
    ref: Reference | None,
) -> None:
    keys = ("duration_ratio", "drift_s", "format_matches_source", "ltas_distance_db")
    if ref is None:
        for key in keys:
            metrics[key] = None
            notes[key] = "no source audio to compare with"
        return
    metrics["duration_ratio"] = (
        round(audio.duration / ref.duration_s, 5) if ref.duration_s > 0 else None
    )
    metrics["drift_s"] = round(audio.duration - ref.duration_s, 4)
    same = audio.sample_rate == ref.sample_rate and audio.channels == ref.channels
    metrics["format_matches_source"] = int(same)
    ltas = long_term_spectrum(mono, spans16)
    if ltas is None or ref.ltas_db is None:
        metrics["ltas_distance_db"] = None
        notes["ltas_distance_db"] = "too little speech in the round or the source"
    else:
        metrics["ltas_distance_db"] = round(float(np.sqrt(np.mean((ltas - ref.ltas_db) ** 2))), 3)
    if metrics["duration_ratio"] is None:
        notes["duration_ratio"] = "the source is empty"


def _heavy(
    metrics: Metrics, notes: dict[str, str], mono: np.ndarray, ref: Reference | None, heavy: bool
) -> None:
    mos_keys = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")
    for key in (*mos_keys, "speaker_similarity"):
        metrics[key] = None
    if not heavy:
        for key in (*mos_keys, "speaker_similarity"):
            notes[key] = "not measured: heavy QC is off"
        return
    missing = dnsmos_unavailable()
    if missing:
        notes.update(dict.fromkeys(mos_keys, f"not available: {missing}"))
    elif mono.shape[0] == 0:
        notes.update(dict.fromkeys(mos_keys, "empty audio"))
    else:
        metrics.update(dnsmos(mono))
    missing = similarity_unavailable()
    if missing:
        notes["speaker_similarity"] = f"not available: {missing}"
    elif ref is None:
        notes["speaker_similarity"] = "no source audio to compare with"
    elif ref.embedding is None:
        notes["speaker_similarity"] = ref.embedding_note or "the source has no speaker embedding"
    else:
        try:
            own = speaker_embedding(mono)
        except ValueError as error:
            notes["speaker_similarity"] = str(error)
        else:
            metrics["speaker_similarity"] = round(float(np.dot(own, ref.embedding)), 4)
