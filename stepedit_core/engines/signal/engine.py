"""The CPU signal engine: speed, denoise, vad and loudness with well-kept DSP libraries."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from stepedit_core.engines.base import Engine, EngineNotReady
from stepedit_core.engines.signal.trace import SignalTrace
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.audio_ref import AudioRef
from stepedit_core.foundation.edits import LOUDNESS_PROFILES, SIGNAL, EditSpec
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.stages import EngineStage, Resources, Stage, WorkItem
from stepedit_core.words.timing import OutputWords

REQUIRED_MODULES = (
    "python_stretch",
    "pyloudnorm",
    "silero_vad",  # ships the speech model file (read without importing the package)
    "onnxruntime",  # runs that model
    "soxr",
    "scipy",
    "pocketsphinx",
)
STAGE_NAME = "signal_edit"
DEFAULT_BATCH_SIZE = 16


class SignalEditStage(EngineStage):
    """Applies a round's signal edits, in order, to each active item, one item at a time.

    Models (silero-vad's ONNX model, librnnoise) load in `setup()` and live only in attributes
    that pickling drops, so the stage can be shipped to Ray actors before or after it was set up.
    """

    name = STAGE_NAME
    resources = Resources(cpus=1.0)

    def __init__(
        self,
        vad_max_pause: float = 0.3,
        batch_size: int = DEFAULT_BATCH_SIZE,
        engine: str = SIGNAL,
        asr_models: str | None = None,
    ) -> None:
        self.vad_max_pause = float(vad_max_pause)
        self.asr_models = asr_models
        self.batch_size = int(batch_size)
        self.engine_name = engine
        self._vad: Any = None
        self._denoiser: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_vad"] = None
        state["_denoiser"] = None
        return state

    def setup(self) -> None:
        if self._vad is None:
            # the process's one silero-vad session: QC and ACX mastering use the same one
            from stepedit_core.signal.vad import shared_vad

            self._vad = shared_vad()
        if self._denoiser is None:
            from stepedit_core.engines.signal.denoise import load_denoiser

            self._denoiser = load_denoiser()

    @property
    def denoise_backend(self) -> str | None:
        return getattr(self._denoiser, "backend", None)

    def process_item(self, item: WorkItem) -> None:
        if isinstance(item.audio, AudioRef) and item.audio_dir and streams(item.round_edits):
            # a chapter's loudness runs in blocks, from object to object
            from stepedit_core.engines.signal.by_reference import loudness_by_reference

            if self._vad is None:
                self.setup()
            option = str(item.round_edits[0].option)
            item.output, spans = loudness_by_reference(
                item.audio, option, item.audio_dir, self._vad
            )
            item.output_speech = spans  # found once: QC of this round reuses them
            return
        audio = item.samples("audio")  # read here when the round's input is a reference
        if audio is None:
            raise ItemFailure("no_audio", "no input audio for the signal edit")
        samples, rate, channels = audio.samples, audio.sample_rate, audio.channels
        for spec in item.round_edits:
            if spec.type == "fillers":
                samples = self.remove_fillers(item, spec, samples, rate)
            else:
                # the fillers edit's words describe its own output, not what a later edit
                # makes of it: the word-timing stage times this round's output instead
                item.words = None
                samples = self.apply(spec, samples, rate)
        if not np.isfinite(samples).all():
            raise ItemFailure("non_finite_output", "the signal edit produced NaN/inf samples")
        item.set_output(Audio(samples.reshape(-1, channels), rate))

    def remove_fillers(
        self, item: WorkItem, spec: EditSpec, samples: np.ndarray, sample_rate: int
    ) -> np.ndarray:
        """The fillers edit (stepedit_core/words): the word timings and the cuts go into the
        round's record."""
        from stepedit_core.words.edit import remove_fillers
        from stepedit_core.words.fillers import words_after_cuts

        if self._vad is None:
            self.setup()
        asr = None
        if self.asr_models is not None:
            from stepedit_core.words.asr import shared_asr

            asr = shared_asr(self.asr_models)
        result = remove_fillers(
            spec, samples, sample_rate, item.text, item.language, asr, self._vad
        )
        # the words of the edit's output: its alignment moved past the cuts, not aligned again
        moved = words_after_cuts(result.timings.words, result.cuts, samples.shape[0], sample_rate)
        item.words = OutputWords(moved, backend=result.timings.backend)
        SignalTrace.of(item).cuts = list(result.cuts)
        if result.timings.text_source == "asr" and not (item.text or "").strip():
            item.text, item.text_source = result.timings.text, "asr"
        return result.samples

    def apply(self, spec: EditSpec, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """One edit on (frames, channels) float32 samples; returns samples at the same rate."""
        if spec.type == "speed":
            from stepedit_core.engines.signal.speed import time_stretch

            return time_stretch(samples, sample_rate, spec.speed_factor)
        if spec.type == "denoise":
            if self._denoiser is None:
                self.setup()
            return self._denoiser(samples, sample_rate)
        if spec.type == "vad":
            from stepedit_core.engines.signal.vad import shorten_pauses

            if self._vad is None:
                self.setup()
            max_pause = float(spec.option) if spec.option is not None else self.vad_max_pause
            speech = self._vad.speech(samples, sample_rate, max_pause)
            if not speech:
                raise ItemFailure("no_speech", "vad found no speech in this clip")
            return shorten_pauses(samples, sample_rate, speech, max_pause)
        if spec.type == "loudness" and spec.option is not None:
            from stepedit_core.engines.signal.mastering import normalize

            return normalize(samples, sample_rate, spec.option)
        # rows are checked with Engine.check_row before they get here; this is the backstop
        raise ItemFailure(
            "unsupported_edit", f"engine {self.engine_name!r} does not support edit {spec}"
        )


def streams(edits: tuple[EditSpec, ...]) -> bool:
    """Whether a round's edits run in blocks on referenced audio (one `loudness` edit; see
    by_reference.py); other edits read referenced audio whole."""
    return len(edits) == 1 and edits[0].type == "loudness" and edits[0].option is not None


def _profiles() -> str:
    return ", ".join(
        f"{name} ({lufs:g} LUFS, {ceiling:g} dBTP)"
        for name, (lufs, ceiling) in LOUDNESS_PROFILES.items()
        if name != "acx"
    )


class SignalEngine(Engine):
    name = SIGNAL
    version = "1.0"
    description = (
        "CPU signal processing, no model download: time-stretch with pitch and formants kept "
        "(Signalsmith Stretch), RNNoise denoising, silero-vad pause shortening, BS.1770 "
        "loudness normalisation with a true-peak limiter, and filler removal."
    )
    reads_text = False
    trace_type = SignalTrace
    notes = {
        "speed": "pitch and formants are kept (1.25 plays 1.25x as fast)",
        "denoise": "RNNoise at 48 kHz (resampled back to the source rate)",
        "vad": (
            "pauses longer than the limit (default 0.3 s) are shortened to it; leading and "
            "trailing silence is kept up to 0.75 s / 1.5 s (inside ACX's window); speech is kept"
        ),
        "fillers": (
            "fillers found by word timings (pocketsphinx alignment of English `text`, or "
            "--asr-models) are cut at the pause around them, leaving one natural pause"
        ),
        "loudness": (
            f"profiles: {_profiles()}, acx (RMS -20 dB, sample peaks <= -3 dBFS, noise floor "
            "under -60 dB between words, 0.75 s head / 1.5 s tail of room tone); a LUFS target "
            "gets true peak <= -1 dBTP"
        ),
    }

    def check_ready(self) -> None:
        """Refuse the run up front when a library an edit needs is not installed (nothing is
        imported here: listing or checking engines loads no model)."""
        missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
        if all(importlib.util.find_spec(name) is None for name in ("pyrnnoise", "noisereduce")):
            missing.append("pyrnnoise (or noisereduce)")
        if missing:
            raise EngineNotReady(
                f"the signal engine needs {', '.join(missing)}; reinstall stepedit with its "
                "dependencies"
            )

    def build_stages(self) -> list[Stage]:
        batch = self.options.batch_sizes.get(STAGE_NAME, DEFAULT_BATCH_SIZE)
        return [
            SignalEditStage(self.options.vad_max_pause, batch, self.name, self.options.asr_models)
        ]
