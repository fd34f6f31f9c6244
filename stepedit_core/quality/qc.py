"""Per-round measurements: the basic ones kept in every round record, and delivery QC.

`basic_metrics` is cheap and stored in every round record. `measure` adds what a delivery spec
checks (see `stepedit_core.quality.delivery`), offline, with models that ship inside wheels only:

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
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.audio_ref import AudioRef
from stepedit_core.quality.qc_result import QcResult
from stepedit_core.signal.blocks import BlockInfo, array_blocks, file_info, read_blocks
from stepedit_core.signal.gain import gain_to_db
from stepedit_core.signal.meters import (
    MAX_LOUDNESS_CHANNELS,
    LevelMeter,
    LoudnessMeter,
    NoiseFloorMeter,
    TruePeakMeter,
    feed_all,
    noise_floor_db,
    true_peak_dbtp,
)
from stepedit_core.signal.resample import Resampler, mono, resample
from stepedit_core.signal.vad import SPEECH_MIN_SILENCE_S, shared_vad, speech_spans

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
MOS_KEYS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808")
FEED_FRAMES = 1 << 18  # block size when an in-memory clip is fed through the meters

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
        return QcResult(metrics=dict(self.metrics), notes=self.notes).to_json()


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


class SpectrumMeter:
    """Long-term speech spectrum of a 16 kHz mono stream: Hann-windowed LTAS_FFT frames every
    half frame, inside each speech span (16 kHz frames) that holds at least one frame; only the
    samples a frame still needs are buffered."""

    def __init__(self, spans16: list[tuple[int, int]]) -> None:
        self._spans = [(a, b) for a, b in spans16 if b - a >= LTAS_FFT]
        self._index = 0
        self._next = self._spans[0][0] if self._spans else None
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # stream position of the buffer's first sample
        self._window = np.hanning(LTAS_FFT).astype(np.float32)
        self.power = np.zeros(LTAS_FFT // 2 + 1)
        self.count = 0

    def feed(self, mono16: np.ndarray) -> None:
        buffer = np.concatenate([self._buffer, np.asarray(mono16, dtype=np.float32)])
        end = self._offset + buffer.shape[0]
        hop = LTAS_FFT // 2
        while self._next is not None:
            span_end = self._spans[self._index][1]
            last = min(span_end, end) - LTAS_FFT
            if last >= self._next:
                starts = np.arange(self._next, last + 1, hop) - self._offset
                for at in range(0, starts.shape[0], 1024):  # bounded memory on long speech
                    frames = buffer[starts[at : at + 1024, None] + np.arange(LTAS_FFT)]
                    spectrum = np.fft.rfft(frames * self._window, axis=1)
                    self.power += np.sum(np.abs(spectrum) ** 2, axis=0)
                    self.count += frames.shape[0]
                self._next = int(starts[-1]) + self._offset + hop
            if self._next + LTAS_FFT <= span_end:
                break  # this span goes on in the next block
            self._index += 1
            self._next = self._spans[self._index][0] if self._index < len(self._spans) else None
        keep = end if self._next is None else min(self._next, end)
        self._buffer = buffer[max(0, keep - self._offset) :]
        self._offset = max(self._offset, keep)

    def bands_db(self) -> np.ndarray | None:
        """LTAS_BANDS log-spaced band levels (dB, mean removed); None without speech."""
        if self.count == 0:
            return None
        freqs = np.fft.rfftfreq(LTAS_FFT, 1.0 / ANALYSIS_RATE)
        edges = np.geomspace(*LTAS_RANGE_HZ, LTAS_BANDS + 1)
        band = np.digitize(freqs, edges) - 1
        levels = np.array(
            [self.power[band == b].sum() / self.count for b in range(LTAS_BANDS)],
            dtype=np.float64,
        )
        levels = 10 * np.log10(levels + 1e-20)
        return levels - levels.mean()


def long_term_spectrum(mono16: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray | None:
    """Mean power in LTAS_BANDS log-spaced bands (dB, mean over bands removed) over the speech
    spans (frames at 16 kHz) of a 16 kHz mono signal; None when there is too little speech."""
    meter = SpectrumMeter(spans)
    meter.feed(mono16)
    return meter.bands_db()


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
    spans: list[tuple[int, int]] | None = None,
) -> QcReport:
    """All QC metrics of one round. `source`: the clip's source audio (or its `reference`) for
    drift, format and similarity; `heavy`: also run DNSMOS and speaker similarity (the
    `qc-heavy` extra); `vad`: a loaded `SileroVad` to reuse (default: one per process);
    `spans`: the round's speech spans when already found (mastering found them)."""
    ref = reference(source, heavy, vad) if isinstance(source, Audio) else source
    samples = audio.samples
    metrics, notes = measure_stream(
        lambda: array_blocks(samples, FEED_FRAMES),
        audio.sample_rate,
        audio.channels,
        ref,
        vad,
        spans,
    )
    mono16 = mono_16k(samples, audio.sample_rate) if heavy and audio.frames else None
    _heavy(metrics, notes, mono16, ref, heavy)
    return QcReport(metrics, notes)


def measure_file(
    path: str | Path,
    source: Reference | None = None,
    vad: Any = None,
    spans: list[tuple[int, int]] | None = None,
    block_frames: int | None = None,
) -> QcReport:
    """`measure` of an audio file of any length, read in blocks (memory: one block plus a few
    numbers per 10 ms). The heavy models are not run on files (they are noted as such)."""
    info = file_info(path)
    return measure_blocks(
        lambda: read_blocks(path, block_frames), info.sample_rate, info.channels, source, vad, spans
    )


def measure_ref(
    ref: AudioRef,
    source: Reference | None = None,
    vad: Any = None,
    spans: list[tuple[int, int]] | None = None,
) -> QcReport:
    """`measure_file` of round audio that travels by reference (read from its object)."""
    return measure_blocks(ref.blocks, ref.sample_rate, ref.channels, source, vad, spans)


def measure_blocks(
    open_blocks: Callable[[], Iterator[np.ndarray]],
    rate: int,
    channels: int,
    source: Reference | None = None,
    vad: Any = None,
    spans: list[tuple[int, int]] | None = None,
) -> QcReport:
    """QC of a stream that can be opened again; the heavy models are noted as not run."""
    metrics, notes = measure_stream(open_blocks, rate, channels, source, vad, spans)
    for key in (*MOS_KEYS, "speaker_similarity"):
        metrics[key] = None
        notes[key] = "not measured: heavy QC runs on clips in memory"
    return QcReport(metrics, notes)


def reference_blocks(
    open_blocks: Callable[[], Iterator[np.ndarray]], rate: int, channels: int, vad: Any = None
) -> Reference:
    """`reference` of a source of any length, in two passes over its blocks (speech, then the
    spectrum of the speech); no speaker embedding (heavy QC runs on clips in memory)."""
    finder = (vad or shared_vad()).finder(rate, channels, SPEECH_MIN_SILENCE_S)
    for block in open_blocks():
        finder.feed(block)
    spans = finder.finish() if finder.frames else []
    spectrum = _SpectrumStream(rate, _to_16k(spans, rate))
    for block in open_blocks():
        spectrum.feed(block)
    return Reference(
        duration_s=finder.frames / rate,
        sample_rate=rate,
        channels=channels,
        ltas_db=spectrum.bands_db(),
        embedding_note="not measured: heavy QC runs on clips in memory",
    )


def measure_stream(
    open_blocks: Callable[[], Iterator[np.ndarray]],
    rate: int,
    channels: int,
    ref: Reference | None = None,
    vad: Any = None,
    spans: list[tuple[int, int]] | None = None,
) -> tuple[Metrics, dict[str, str]]:
    """Every signal metric of a stream of blocks, in one pass (two when the speech must be found
    first and a source's spectrum asks for the round's: the spectrum is taken over speech)."""
    level, peak, floor = (
        LevelMeter(),
        TruePeakMeter(rate, channels),
        NoiseFloorMeter(rate, channels),
    )
    loudness = LoudnessMeter(rate, channels) if channels <= MAX_LOUDNESS_CHANNELS else None
    meters: list[Any] = [level, peak, floor] + ([loudness] if loudness else [])
    finder = None
    if spans is None:
        finder = (vad or shared_vad()).finder(rate, channels, SPEECH_MIN_SILENCE_S)
        meters.append(finder)
    want_ltas = ref is not None
    spectrum = _SpectrumStream(rate, _to_16k(spans, rate)) if want_ltas and spans else None
    if spectrum:
        meters.append(spectrum)
    for block in open_blocks():
        for meter in meters:
            meter.feed(block)
    frames = level.frames
    if finder is not None:
        spans = finder.finish() if frames else []
    spans = spans or []
    if want_ltas and spectrum is None and spans:  # the speech is known now: its spectrum
        spectrum = _SpectrumStream(rate, _to_16k(spans, rate))
        for block in open_blocks():
            spectrum.feed(block)

    metrics: Metrics = dict(level_metrics(level, frames / rate))
    notes: dict[str, str] = {}
    metrics["sample_rate_hz"] = rate
    metrics["channels"] = channels
    too_many = "BS.1770 loudness is defined for at most 5 channels"
    for key, (value, note) in (
        ("loudness_lufs", loudness_of(loudness) if loudness else (None, too_many)),
        ("loudness_range_lu", loudness_range_of(loudness) if loudness else (None, too_many)),
    ):
        metrics[key] = value
        if note:
            notes[key] = note
    true_peak = gain_to_db(peak.finish()) if frames else float("-inf")
    metrics["true_peak_dbtp"] = round(true_peak, 2) if math.isfinite(true_peak) else None
    if metrics["true_peak_dbtp"] is None:
        notes["true_peak_dbtp"] = "digital silence"
    metrics["noise_floor_db"] = floor.finish()

    speech = sum(end - start for start, end in spans)
    metrics["speech_ratio"] = round(speech / frames, 4) if frames else None
    if spans:
        metrics["head_silence_s"] = round(spans[0][0] / rate, 3)
        metrics["tail_silence_s"] = round((frames - spans[-1][1]) / rate, 3)
    else:
        metrics["head_silence_s"] = metrics["tail_silence_s"] = None
        notes["head_silence_s"] = notes["tail_silence_s"] = "silero-vad found no speech"
    ltas = spectrum.bands_db() if spectrum else None
    _compare(metrics, notes, BlockInfo(frames, rate, channels), ltas, ref)
    return metrics, notes


class _SpectrumStream:
    """SpectrumMeter fed with blocks at the round's own rate (mixed down, resampled)."""

    def __init__(self, rate: int, spans16: list[tuple[int, int]]) -> None:
        self._resampler = Resampler(rate, ANALYSIS_RATE, 1)
        self._meter = SpectrumMeter(spans16)

    def feed(self, block: np.ndarray) -> None:
        self._meter.feed(self._resampler.feed(mono(block)[:, None])[:, 0])

    def bands_db(self) -> np.ndarray | None:
        self._meter.feed(self._resampler.flush()[:, 0])
        return self._meter.bands_db()


def _to_16k(spans: list[tuple[int, int]], rate: int) -> list[tuple[int, int]]:
    scale = ANALYSIS_RATE / rate
    return [(int(a * scale), int(b * scale)) for a, b in spans]


def _compare(
    metrics: Metrics,
    notes: dict[str, str],
    info: BlockInfo,
    ltas: np.ndarray | None,
    ref: Reference | None,
) -> None:
    keys = ("duration_ratio", "drift_s", "format_matches_source", "ltas_distance_db")
    if ref is None:
        for key in keys:
            metrics[key] = None
            notes[key] = "no source audio to compare with"
        return
    metrics["duration_ratio"] = (
        round(info.duration / ref.duration_s, 5) if ref.duration_s > 0 else None
    )
    metrics["drift_s"] = round(info.duration - ref.duration_s, 4)
    same = info.sample_rate == ref.sample_rate and info.channels == ref.channels
    metrics["format_matches_source"] = int(same)
    if ltas is None or ref.ltas_db is None:
        metrics["ltas_distance_db"] = None
        notes["ltas_distance_db"] = "too little speech in the round or the source"
    else:
        metrics["ltas_distance_db"] = round(float(np.sqrt(np.mean((ltas - ref.ltas_db) ** 2))), 3)
    if metrics["duration_ratio"] is None:
        notes["duration_ratio"] = "the source is empty"


def _heavy(
    metrics: Metrics,
    notes: dict[str, str],
    mono: np.ndarray | None,
    ref: Reference | None,
    heavy: bool,
) -> None:
    mos_keys = MOS_KEYS
    for key in (*mos_keys, "speaker_similarity"):
        metrics[key] = None
    if not heavy:
        for key in (*mos_keys, "speaker_similarity"):
            notes[key] = "not measured: heavy QC is off"
        return
    missing = dnsmos_unavailable()
    if missing:
        notes.update(dict.fromkeys(mos_keys, f"not available: {missing}"))
    elif mono is None or mono.shape[0] == 0:
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
            own = speaker_embedding(mono if mono is not None else np.zeros(0, np.float32))
        except ValueError as error:
            notes["speaker_similarity"] = str(error)
        else:
            metrics["speaker_similarity"] = round(float(np.dot(own, ref.embedding)), 4)
