"""The `fillers` edit: find fillers in word timings and cut them out at the pause around them.

A cut takes out one run of fillers (and the voiced stretches no word explains) between two words
of the text, together with part of the pauses on either side, and leaves one natural pause: as
long as the longer of the two pauses it replaces (at least `MIN_PAUSE_S`). The pause is built
from the room tone next to each word, joined by short equal-power crossfades; where the two
edges are too short, room tone matched to the clip's own pauses fills the rest, so no digital
silence goes in. Every cut is a `Cut` in the input's timeline; the audio outside cuts is
copied untouched, and a clip without fillers comes back as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from stepedit_core.signal.gain import crossfade
from stepedit_core.words.timing import Word

MIN_PAUSE_S = 0.15  # the shortest pause a cut leaves
# What a run of fillers must look like to be cut. A word the text leaves out is still spoken, and
# the aligner can only explain it as a string of fillers: such runs are longer, jammed between
# words, or uncertain. A run that fails any of these is kept (and still listed in the words).
MAX_RUN_WORDS = 2  # "um", or "uh mm" for a "hmm"; three or more are a missing word
MIN_RUN_S = 0.08
MIN_RUN_CONFIDENCE = 0.3  # the run's most confident filler
MIN_SIDE_PAUSE_S = 0.05  # a filler is set off by a pause on at least one side
CROSSFADE_S = 0.01
# a voiced stretch no ASR word is on counts as a filler when it is this long (shorter: a breath
# or a click; longer: speech the ASR missed, which is not ours to cut)
MIN_VOICED_S = 0.12
MAX_VOICED_S = 0.8
WORD_TAIL_S = 0.4  # the part of an ASR word whose times are trusted (see unexplained_voice)
ROOM_TONE_SEED = 0x5EED
EDGE_GUARD_S = 0.02


@dataclass(frozen=True)
class Cut:
    """[start_s, end_s) of the input is taken out; `room_tone_s` of matched room tone go in."""

    start_s: float
    end_s: float
    word: str  # the fillers cut, space-joined (`<voiced>`: a stretch no word explains)
    room_tone_s: float = 0.0


def cuts_json(cuts: list[Cut]) -> str:
    return json.dumps(
        [
            {
                "start_s": round(c.start_s, 3),
                "end_s": round(c.end_s, 3),
                "word": c.word,
                "room_tone_s": round(c.room_tone_s, 3),
            }
            for c in cuts
        ]
    )


def unexplained_voice(words: list[Word], voiced: list[tuple[float, float]]) -> list[Word]:
    """ASR words put onto the voiced stretches (seconds) they belong to, and every short stretch
    no word belongs to as a `<voiced>` filler: what an ASR that leaves fillers out of its
    transcript shows of them.

    Whisper's word ends are close, its starts often reach back over a pause (and a filler in
    it), so a word belongs to the stretch that its last `WORD_TAIL_S` overlap most, or the
    nearest one; its times are then clipped to that stretch."""
    if not voiced:
        return list(words)
    homes: set[int] = set()
    placed = []
    for w in words:
        tail = (max(w.start, w.end - WORD_TAIL_S), w.end)
        home = max(range(len(voiced)), key=lambda i: _overlap(tail, voiced[i]))
        if _overlap(tail, voiced[home]) <= 0:
            home = min(range(len(voiced)), key=lambda i: _distance(w.end, voiced[i]))
        homes.add(home)
        start, end = voiced[home]
        clipped = (min(max(w.start, start), end), max(min(w.end, end), start))
        placed.append(Word(w.word, clipped[0], max(clipped), w.confidence, w.filler))
    for index, (start, end) in enumerate(voiced):
        if index not in homes and MIN_VOICED_S <= end - start <= MAX_VOICED_S:
            placed.append(Word("<voiced>", start, end, None, True))
    return sorted(placed, key=lambda w: (w.start, w.end))


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def _distance(t: float, span: tuple[float, float]) -> float:
    return 0.0 if span[0] <= t <= span[1] else min(abs(t - span[0]), abs(t - span[1]))


def plan_cuts(words: list[Word], fillers: tuple[str, ...], duration: float) -> list[Cut]:
    """One cut per run of fillers between two kept words (or a clip edge) that holds one of
    `fillers`: a run is one sound to the ear (a "hmm" may align as "uh mm")."""
    chosen = set(fillers) | {"<voiced>"}
    cuts: list[Cut] = []
    run: list[Word] = []
    prev_end = 0.0
    for w in [*words, None]:
        if w is not None and w.filler:
            run.append(w)
            continue
        next_start = duration if w is None else w.start
        if any(f.word in chosen for f in run) and _looks_like_a_filler(run, prev_end, next_start):
            cut = _cut(run, prev_end, next_start)
            if cut.end_s > cut.start_s:  # overlapping word times leave nothing to cut
                cuts.append(cut)
        run = []
        if w is not None:
            prev_end = max(prev_end, w.end)
    return cuts


def _looks_like_a_filler(run: list[Word], prev_end: float, next_start: float) -> bool:
    confidences = [w.confidence for w in run if w.confidence is not None]
    pause = max(run[0].start - prev_end, next_start - run[-1].end)
    return (
        len(run) <= MAX_RUN_WORDS
        and run[-1].end - run[0].start >= MIN_RUN_S
        and (not confidences or max(confidences) >= MIN_RUN_CONFIDENCE)
        and pause >= MIN_SIDE_PAUSE_S
    )


def _cut(run: list[Word], prev_end: float, next_start: float) -> Cut:
    before = max(0.0, run[0].start - prev_end)  # pause between the last kept word and the run
    after = max(0.0, next_start - run[-1].end)
    pause = max(before, after, MIN_PAUSE_S)
    keep_before = min(before, pause / 2)
    keep_after = min(after, pause - keep_before)
    keep_before = min(before, pause - keep_after)
    fill = max(0.0, pause - keep_before - keep_after)
    word = " ".join(w.word for w in run)
    return Cut(prev_end + keep_before, next_start - keep_after, word, fill)


@dataclass(frozen=True)
class _Splice:
    """One cut in frames: [start, end) leaves, `fade` frames either side are blended, `fill`
    frames of room tone go in."""

    start: int
    end: int
    fade: int
    fill: int


def _splices(frames: int, sample_rate: int, cuts: list[Cut]) -> list[_Splice]:
    """The cuts as `apply_cuts` makes them (clamped to the clip and to each other)."""
    xfade = max(1, round(CROSSFADE_S * sample_rate))
    found, cursor = [], 0
    for cut in cuts:
        start = min(frames, max(cursor, round(cut.start_s * sample_rate)))
        end = min(frames, max(start, round(cut.end_s * sample_rate)))
        fade = min(xfade, start - cursor, frames - end)
        found.append(_Splice(start, end, fade, round(cut.room_tone_s * sample_rate)))
        cursor = end + fade
    return found


def apply_cuts(
    samples: np.ndarray,
    sample_rate: int,
    cuts: list[Cut],
    quiet: list[tuple[float, float]],
) -> np.ndarray:
    """(frames, channels) samples with every cut taken out; `quiet` (seconds) are the clip's
    pauses, whose spectrum the room tone of a fill matches."""
    if not cuts:
        return samples
    pieces: list[np.ndarray] = []
    cursor = 0
    rng = np.random.default_rng(ROOM_TONE_SEED)
    for s in _splices(samples.shape[0], sample_rate, cuts):
        start, end, fade, fill = s.start, s.end, s.fade, s.fill
        # what goes in the cut: room tone (if any) between the two edges
        incoming = samples[end : end + fade]
        pieces.append(samples[cursor : start - fade] if fade else samples[cursor:start])
        if fill > 0:
            tone = room_tone(samples, sample_rate, quiet, fill + 2 * fade, rng)
            if fade:
                pieces.append(crossfade(samples[start - fade : start], tone[:fade]))
                pieces.append(tone[fade : fade + fill])
                pieces.append(crossfade(tone[fade + fill :], incoming))
            else:
                pieces.append(tone[:fill])
        elif fade:
            pieces.append(crossfade(samples[start - fade : start], incoming))
        cursor = end + fade
    pieces.append(samples[cursor:])
    return np.ascontiguousarray(np.concatenate(pieces, axis=0), dtype=np.float32)


def words_after_cuts(
    words: list[Word], cuts: list[Cut], frames: int, sample_rate: int
) -> list[Word]:
    """`words` (timed on the input of `apply_cuts`) on its output's timeline: the words the
    cuts took out are gone, every other word moves by what the cuts before it took out and
    put in. Lets the fillers edit's own alignment describe its output, with no second pass."""
    if not cuts:
        return list(words)
    moves = []  # (input frame a cut starts, its end, output minus input frame after it)
    cursor = out = 0
    for s in _splices(frames, sample_rate, cuts):
        out += s.start - s.fade - cursor  # the audio kept before the cut, less its fade
        # then the join: fade + room tone + fade, or one crossfade when no tone goes in
        out += s.fill + 2 * s.fade if s.fill > 0 else s.fade
        cursor = s.end + s.fade
        moves.append((s.start, s.end, out - cursor))

    def moved(t: float) -> float:
        frame, shift = t * sample_rate, 0
        for start, end, after in moves:
            if frame < start:
                break
            if frame < end:  # inside a cut: where the cut is in the output
                return (start + shift) / sample_rate
            shift = after
        return (frame + shift) / sample_rate

    kept = []
    for w in words:
        inside = any(
            c.start_s - CROSSFADE_S <= w.start and w.end <= c.end_s + CROSSFADE_S for c in cuts
        )
        if not inside:
            start, end = round(moved(w.start), 3), round(moved(w.end), 3)
            kept.append(Word(w.word, start, max(start, end), w.confidence, w.filler))
    return kept


def room_tone(
    samples: np.ndarray,
    sample_rate: int,
    quiet: list[tuple[float, float]],
    frames: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """`frames` of noise with the average spectrum and level of the clip's quiet stretches, per
    channel (the quietest 50 ms of the clip when it has no pause of its own)."""
    parts = [samples[round(a * sample_rate) : round(b * sample_rate)] for a, b in quiet]
    bed = np.concatenate([p for p in parts if p.shape[0]] or [samples[:0]], axis=0)
    window = max(16, round(0.05 * sample_rate))
    if bed.shape[0] < window:
        bed = _quietest(samples, window)
    size = 1 << int(np.ceil(np.log2(max(frames, window))))
    out = np.empty((frames, samples.shape[1]), dtype=np.float32)
    for ch in range(samples.shape[1]):
        x = bed[:, ch].astype(np.float64)
        n_blocks = max(1, x.shape[0] // window)
        blocks = x[: n_blocks * window].reshape(n_blocks, window) * np.hanning(window)
        power = np.mean(np.abs(np.fft.rfft(blocks, axis=1)) ** 2, axis=0)
        shape = np.interp(np.linspace(0, 1, size // 2 + 1), np.linspace(0, 1, power.size), power)
        noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(size)) * np.sqrt(shape), size)
        noise = noise[:frames]
        level = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
        current = float(np.sqrt(np.mean(noise**2))) or 1.0
        out[:, ch] = noise * (level / current)
    return out


def _quietest(samples: np.ndarray, window: int) -> np.ndarray:
    count = max(1, samples.shape[0] // window)
    blocks = samples[: count * window].reshape(count, window, -1)
    power = np.mean(blocks.astype(np.float64) ** 2, axis=(1, 2))
    return blocks[int(np.argmin(power))]


def pauses(words: list[Word], duration: float, min_s: float = 0.05) -> list[tuple[float, float]]:
    """Stretches with no word at all (fillers count as words), in seconds."""
    gaps, cursor = [], 0.0
    for w in [*sorted(words, key=lambda w: w.start), Word("", duration, duration)]:
        # word edges are 10 ms frames: keep clear of them so no speech counts as room tone
        start, end = cursor + EDGE_GUARD_S, w.start - EDGE_GUARD_S
        if end - start >= min_s:
            gaps.append((start, end))
        cursor = max(cursor, w.end)
    return gaps
