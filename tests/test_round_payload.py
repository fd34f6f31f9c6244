"""Round audio travels by reference and round records leave the item as each round ends: an
item's pickled size stays small and constant over the rounds, whatever the clip's length."""

from __future__ import annotations

import pickle

from work_items import records_of, row_item

from stepedit_core.catalog.records import RoundRecord
from stepedit_core.engines import make_engine
from stepedit_core.foundation.audio_ref import AudioRef
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.lifecycle.rounds import RoundEnd, build_stages

from conftest import write_clip

ROUNDS = 4


def sizes_after_each_round(
    tmp_path, seconds: float
) -> tuple[list[int], WorkItem, list[RoundRecord]]:
    clip = write_clip(tmp_path / f"{seconds:g}.wav", seconds, rate=16000)
    item = row_item(0, "c", clip, parse_chain("loudness=-20"), audio_dir=str(tmp_path / "objs"))
    stages = build_stages(make_engine("signal"), ROUNDS, with_clone_round=False)
    sizes = []
    for stage in stages:
        if stage.needs_actor:
            stage.setup()
        (item,) = stage.process_batch([item])
        if isinstance(stage, RoundEnd):
            sizes.append(len(pickle.dumps(item)))
    return sizes, item, records_of(stages, item)


def test_an_items_payload_is_small_and_does_not_grow_with_the_rounds_or_the_clip(tmp_path):
    long_sizes, item, records = sizes_after_each_round(tmp_path, 60.0)
    assert not item.failed, item.error
    assert [r.round for r in records] == [1, 2, 3, 4] and all(r.ok for r in records)
    # the audio is a reference to its published object, in the item and in every record
    assert isinstance(item.audio, AudioRef) and item.output is None
    assert all(r.audio_flac is None and r.audio_ref for r in records)
    assert item.audio.sha256 == records[-1].output_sha256
    # the item keeps only what it sealed: how many rounds, the last two's hashes
    assert item.sealed.count == ROUNDS
    assert item.sealed.last.record_sha256 == records[-1].record_sha256
    assert item.sealed.before.record_sha256 == records[-2].record_sha256
    assert b"qc_json" not in pickle.dumps(item)  # no record rides on it
    # 60 s of 16 kHz audio is about 1.9 MB as float32 and ~100 kB as FLAC; the item is
    # a few kilobytes whatever the length
    assert max(long_sizes) < 8_000, long_sizes
    # from the second round on (when it keeps two sealed rounds) the size is constant, but
    # for the digits of numbers (timings, round counts)
    assert max(long_sizes[1:]) - min(long_sizes[1:]) < 32, long_sizes
    # a short clip's source is read whole and stays on the item (rounds.REFERENCE_SOURCE_S),
    # but what the rounds add to it is the same as for the long one
    short_sizes, _, _ = sizes_after_each_round(tmp_path, 3.0)
    long_growth = [b - long_sizes[0] for b in long_sizes]
    short_growth = [b - short_sizes[0] for b in short_sizes]
    assert all(abs(lg - sg) < 32 for lg, sg in zip(long_growth, short_growth, strict=True))
