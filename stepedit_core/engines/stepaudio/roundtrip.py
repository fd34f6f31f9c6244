"""What happens to a clip between two chained model edits of one round (and between two rounds),
and the record of each pass.

The public release runs one edit per request. To chain a second edit it keeps the first edit's
24 kHz output as a float array, writes it to a WAV file with `soundfile` (whose default for WAV
is 16-bit PCM) and hands the file's path to the next edit, which reads it back with
`torchaudio.load` (16-bit samples divided by 32768). `soundfile` turns libsndfile's clipping on,
and on that path libsndfile scales a float sample to 32 bits (x * 2^31, rounded) and keeps the
top 16: the stored sample is floor(x * 32768), saturated at -32768 and 32767 (+1.0 gives 32767,
-1.0 gives -32768; measured with soundfile 0.14 and its libsndfile 1.2.2, and the tests check
`pcm16` against the installed soundfile bit for bit).
From there the clip goes the way every input clip goes:

1. mixed down to mono and, when its peak is over 0.6, scaled so that the peak is 0.6; the
   decoder's voice prompt features (24 kHz mel, speaker embedding) come from this audio;
2. the tokenizer's `wav2token`, called with its defaults, resamples it to 16 kHz, scales it so
   that the peak is 0.999 (a peak under 0.01 counts as 0.01) and trims silence: it finds the
   non-silent span (frames of 512 samples every 128 whose RMS is within 20 dB of the loudest
   frame), keeps 0.05 s before it (zero-padding the start when there is less), and cuts or
   zero-pads the end so that the clip lasts the span rounded up to whole 240-sample hops plus
   0.05 s + 0.22 s.

Steps 1 and 2 are what the engine's tokenize stage already does to every clip
(`tokenizer.AudioTokenizer.encode`: the peak cap in our code, the resampling, normalisation and
trimming inside the release's own tokenizer, which the engine runs). Doing the trim or the
normalisation a second time in our code would apply them twice. What a chain adds is the 16-bit
write and read. The release's iterations (its command line's `--n-edit-iter` and its web front
end) hand each result on through the same kind of WAV file, so the engine applies `pcm16`
between two rounds as well (the engine's `round_handoff`).

Each pass of a round is recorded (`pass_entry`, kept in the round record's `passes_json`): the
edit, the number of input and output codes and a sha256 of each code list, written as the
comma-joined decimal codes (the `--audio-codes` format of `stepedit prompt`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import EditSpec

_SCALE_32 = float(1 << 31)  # libsndfile's float -> int scale on its clipping path
_READ_SCALE = np.float32(32768.0)  # torchaudio.load: short -> float


def pcm16(audio: Audio) -> Audio:
    """`audio` after a 16-bit PCM WAV write with soundfile and a read with torchaudio."""
    wide = np.rint(audio.samples.astype(np.float64) * _SCALE_32)  # exact: a power-of-two scale
    shorts = np.clip(np.floor(wide / 65536.0), -32768, 32767)  # top 16 bits of the 32-bit value
    return Audio(shorts.astype(np.float32) / _READ_SCALE, audio.sample_rate)


def codes_sha256(codes: list[int]) -> str:
    """sha256 of the codes written as comma-joined decimal numbers."""
    return hashlib.sha256(",".join(str(int(c)) for c in codes).encode()).hexdigest()


@dataclass(frozen=True)
class PassEntry:
    """One LLM pass of a round, as kept in the round record. `input_from` says where the input
    codes came from: `round_input` (the round's input clip) or `decoded_pass_N` (pass N's
    output decoded, written and read as 16-bit audio and tokenized again)."""

    number: int  # the pass's place in the round, from 1
    edit: str
    input_from: str
    input_codes: int
    input_sha256: str
    output_codes: int
    output_sha256: str
    segment: int | None = None  # a chapter's pass: the segment it edited, from 1

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "pass": self.number,
            "edit": self.edit,
            "input_from": self.input_from,
            "input_codes": self.input_codes,
            "input_sha256": self.input_sha256,
            "output_codes": self.output_codes,
            "output_sha256": self.output_sha256,
        }
        if self.segment is not None:
            entry["segment"] = self.segment
        return entry


def pass_entry(
    number: int,
    spec: EditSpec,
    input_codes: list[int],
    output_codes: list[int],
    input_from: str,
) -> PassEntry:
    """Pass `number` of a round: `spec` read `input_codes` and generated `output_codes`."""
    return PassEntry(
        number,
        str(spec),
        input_from,
        len(input_codes),
        codes_sha256(input_codes),
        len(output_codes),
        codes_sha256(output_codes),
    )
