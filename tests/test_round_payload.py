"""Round audio travels by reference: an item's pickled size stays small over the rounds of a long
clip, and what it gains per round does not depend on the clip's length."""

from __future__ import annotations

import pickle

from work_items import row_item

from stepedit_core.engines import make_engine
from stepedit_core.foundation.audio_ref import AudioRef
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.lifecycle.rounds import RoundEnd, build_stages

from conftest import write_clip

ROUNDS = 3


def sizes_after_each_round(tmp_path, seconds: float) -> tuple[list[int], WorkItem]:
    clip = write_clip(tmp_path / f"{seconds:g}.wav", seconds, rate=16000)
    item = row_item(0, "c", clip, parse_chain("loudness=-20"), audio_dir=str(tmp_path / "objs"))
    sizes = []
    for stage in build_stages(make_engine("signal"), ROUNDS, with_clone_round=False):
        if stage.needs_actor:
            stage.setup()
        (item,) = stage.process_batch([item])
        if isinstance(stage, RoundEnd):
            sizes.append(len(pickle.dumps(item)))
    return sizes, item


def test_an_items_payload_is_small_and_does_not_grow_with_the_clip(tmp_path):
    long_sizes, item = sizes_after_each_round(tmp_path, 60.0)
    assert not item.failed, item.error
    assert [r.round for r in item.records] == [1, 2, 3] and all(r.ok for r in item.records)
    # the audio is a reference to its published object, in the item and in every record
    assert isinstance(item.audio, AudioRef) and item.output is None
    assert all(r.audio_flac is None and r.audio_ref for r in item.records)
    assert item.audio.sha256 == item.records[-1].output_sha256
    # 60 s of 16 kHz audio is about 1.9 MB as float32 and ~100 kB as FLAC; the item is
    # a few kilobytes of metadata (hashes, QC JSON) whatever the length
    assert max(long_sizes) < 24_000, long_sizes
    short_sizes, _ = sizes_after_each_round(tmp_path, 3.0)
    long_growth = [b - a for a, b in zip(long_sizes, long_sizes[1:], strict=False)]
    short_growth = [b - a for a, b in zip(short_sizes, short_sizes[1:], strict=False)]
    # what a round adds is its record's metadata: the same for 3 s and 60 s (within a few
    # hundred bytes of differing numbers), never the audio
    assert all(abs(lg - sg) < 600 for lg, sg in zip(long_growth, short_growth, strict=True))
    assert all(g < 4_000 for g in long_growth), long_growth
