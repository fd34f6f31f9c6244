"""Regenerate the filler test clips in this folder (FLAC + clips.json with the truth).

Each clip is script pieces and fillers ("um", "uh", "hmm") spoken separately by the Piper voice
"joe" and joined with pauses of known length on the demo clips' room-tone bed, so the exact
time of every script piece and every filler is known. `clips.json` holds, per clip, the script
text (fillers left out, as a catalog's transcript would be), the speech spans of the script
pieces and of the fillers, in seconds.

Needs the demo generator's extras (piper is only needed here, never by the tests)::

    pip install -e .[demo-build]
    python tests/words_clips/make_clips.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from stepedit_core.demo.make_clips import (
    EDGE_PAD_S,
    SAMPLE_RATE,
    Synthesizer,
    silence,
    to_int16,
    with_room_tone,
)

HERE = Path(__file__).resolve().parent
FILLERS = {"um", "uh", "hmm"}

# (clip id, seed, parts): a part is a script piece or filler (str) or a pause in seconds
CLIPS: tuple[tuple[str, int, tuple[str | float, ...]], ...] = (
    ("fill_01", 401, ("So,", 0.25, "um", 0.3, "I think we should leave before the rain starts.")),
    ("fill_02", 402, ("uh", 0.3, "The train was late again this morning,", 0.35, "um", 0.25,
                      "and nobody told us why.")),
    ("fill_03", 403, ("We found the key", 0.2, "uh", 0.2, "under the old mat", 0.3, "hmm", 0.3,
                      "next to the door.")),
    ("plain_01", 404, ("The lighthouse keeper had not seen a ship", 0.3, "in eleven days.")),
)  # fmt: skip


def build(synth: Synthesizer, seed: int, parts: tuple[str | float, ...]) -> tuple[np.ndarray, dict]:
    pieces: list[np.ndarray] = []
    script: list[str] = []
    spans: dict[str, list[list[float]]] = {"script_spans": [], "filler_spans": []}
    cursor = EDGE_PAD_S  # with_room_tone pads the head
    for index, part in enumerate(parts):
        if isinstance(part, float):
            pieces.append(silence(part))
            cursor += len(pieces[-1]) / SAMPLE_RATE
            continue
        audio = synth(part, seed * 10 + index)
        pieces.append(audio)
        end = cursor + len(audio) / SAMPLE_RATE
        kind = "filler_spans" if part in FILLERS else "script_spans"
        spans[kind].append([round(cursor, 4), round(end, 4)])
        if part not in FILLERS:
            script.append(part)
        cursor = end
    audio = with_room_tone(np.concatenate(pieces), seed)
    fillers = [p for p in parts if isinstance(p, str) and p in FILLERS]
    return audio, {"text": " ".join(script), "fillers": fillers, **spans}


def main() -> None:
    synth = Synthesizer()
    catalog = []
    for clip_id, seed, parts in CLIPS:
        audio, truth = build(synth, seed, parts)
        sf.write(HERE / f"{clip_id}.flac", to_int16(audio), SAMPLE_RATE, subtype="PCM_16")
        duration = round(len(audio) / SAMPLE_RATE, 4)
        catalog.append({"clip_id": clip_id, "file": f"{clip_id}.flac", "duration_s": duration,
                        **truth})  # fmt: skip
        print(clip_id, duration, truth["filler_spans"])
    (HERE / "clips.json").write_text(json.dumps(catalog, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
