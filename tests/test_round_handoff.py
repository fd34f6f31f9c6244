"""The round channel: records put as each round ends, taken once per finished clip, checked
against what the clip sealed, replaced (never added to) by a retry, gone once taken."""

from __future__ import annotations

import dataclasses
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from work_items import round_channels_gone, row_item

from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.round_handoff import (
    MissingRoundRecords,
    RoundRecordStore,
    drop_rounds,
    take_records,
)
from stepedit_core.lifecycle.rounds import RoundEnd, StartRound
from stepedit_core.lifecycle.run import run_job

from conftest import write_clip, write_manifest


def _item(row: int, attempt: int = 1) -> WorkItem:
    audio = Audio(np.full(2400, 0.1, np.float32), 24000)
    item = row_item(row, f"c{row}", "a.wav", parse_chain("loudness=-20"), audio=audio)
    item.source_sha256 = f"source-{row}"
    item.attempt = attempt
    return item


def _rounds(channel: RoundRecordStore, items: list[WorkItem], rounds: int) -> None:
    """Run `rounds` rounds whose engine doubles the audio, ending each into `channel`."""
    for k in range(1, rounds + 1):
        StartRound(k, "chain").process_batch(items)
        for item in items:
            item.output = Audio(item.samples().samples * 2, 24000)
        RoundEnd(k, "signal", "1", channel).process_batch(items)


def test_put_and_take_hand_a_clips_records_over_once_and_in_round_order():
    channel = RoundRecordStore()
    first, second = _item(0), _item(1)
    _rounds(channel, [first, second], 3)
    assert channel.held() == 6
    assert first.sealed.count == 3 and first.sealed.last.round == 3

    records = take_records(channel, first)
    assert [r.round for r in records] == [1, 2, 3]
    assert {r.row_index for r in records} == {0}
    assert records[0].prev_record_sha256 == "source-0"  # the chain starts at the source
    assert records[-1].record_sha256 == first.sealed.last.record_sha256
    assert channel.held() == 3  # taken records are gone: the channel holds clips in flight
    assert [r.round for r in take_records(channel, second)] == [1, 2, 3]
    assert channel.held() == 0


def test_a_round_put_again_replaces_its_record():
    channel = RoundRecordStore()
    item = _item(0)
    _rounds(channel, [item], 1)
    (record,) = channel.take_row(0, 1)
    channel.put([(1, record)])
    channel.put([(1, record)])  # its batch ran again after a worker died
    assert channel.held() == 1
    assert take_records(channel, item) == [record]


def test_a_new_attempts_records_replace_the_failed_attempts():
    channel = RoundRecordStore()
    lost = _item(0, attempt=1)
    _rounds(channel, [lost], 3)  # this run's worker died; its records are in the channel
    again = _item(0, attempt=2)
    _rounds(channel, [again], 1)
    assert channel.held() == 4
    records = take_records(channel, again)
    assert [r.round for r in records] == [1]
    assert records[0].record_sha256 == again.sealed.last.record_sha256
    assert channel.held() == 0  # the lost attempt's rounds went with the take, never added


def test_a_clip_whose_run_was_lost_takes_no_records_and_leaves_none():
    channel = RoundRecordStore()
    item = _item(0)
    _rounds(channel, [item], 2)
    drop_rounds(item)  # its worker died: it is recorded as failed with no rounds
    assert take_records(channel, item) == []
    assert channel.held() == 0


def test_taking_records_the_channel_does_not_hold_names_the_row_and_what_is_missing():
    channel = RoundRecordStore()
    item = _item(7)
    _rounds(channel, [item], 2)
    channel.take_row(7, 1)  # the records are gone (a channel that lost them)
    with pytest.raises(MissingRoundRecords, match=r"row 7 \(clip 'c7'\), attempt 1: .*sealed 2"):
        take_records(channel, item)


def test_records_that_are_not_the_ones_the_clip_sealed_are_refused():
    channel = RoundRecordStore()
    item, other = _item(0), _item(1)
    _rounds(channel, [item, other], 2)
    mine = channel.take_row(0, 1)
    theirs = channel.take_row(1, 1)
    stray = dataclasses.replace(theirs[1], row_index=0)  # round 2 of another clip's chain
    channel.put([(1, mine[0]), (1, stray)])
    with pytest.raises(MissingRoundRecords, match="round 2's record does not link"):
        take_records(channel, item)


def test_failed_rounds_are_handed_over_like_ok_ones():
    channel = RoundRecordStore()
    item = _item(0)
    _rounds(channel, [item], 1)
    StartRound(2, "chain").process_batch([item])
    item.fail("stage_error", "the engine broke")
    RoundEnd(2, "signal", "1", channel).process_batch([item])
    StartRound(3, "chain").process_batch([item])
    RoundEnd(3, "signal", "1", channel).process_batch([item])  # nothing ran since the failure
    records = take_records(channel, item)
    assert [(r.round, r.status) for r in records] == [(1, "ok"), (2, "failed")]


def test_the_in_process_channel_refuses_to_travel_to_another_process():
    with pytest.raises(TypeError, match="cannot travel to another process"):
        pickle.dumps(RoundRecordStore())


def test_the_ray_channel_hands_records_over_and_a_lost_channel_is_a_clear_error(ray_cluster):
    import ray

    from stepedit_core.executors.ray_data import RayDataExecutor

    local = RoundRecordStore()
    item = _item(3)
    _rounds(local, [item], 2)
    handed = [(1, r) for r in local.take_row(3, 1)]
    with RayDataExecutor().round_channel() as channel:
        # a round end in a worker process puts through the sink, which travels by pickle
        put = ray.remote(num_cpus=0)(lambda sink, records: sink.put(records))
        ray.get(put.remote(channel.sink, handed))
        assert channel.held() == 2
        assert [r.round for r in take_records(channel, item)] == [1, 2]
        ray.kill(ray.get_actor(channel.name, namespace=channel.namespace))
        # the kill is asynchronous: a call may still be answered until the actor is gone
        deadline = time.monotonic() + 120
        while True:
            try:
                channel.held()
            except MissingRoundRecords as exc:
                assert re.search("round channel .* died", str(exc)), exc
                break
            assert time.monotonic() < deadline, "the killed channel still answers"
            time.sleep(0.1)
    assert round_channels_gone()  # nothing of the channel outlives its run


class CountingStore(RoundRecordStore):
    """An in-process channel that remembers the most records it ever held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def put_keyed(self, entries: list) -> None:
        super().put_keyed(entries)
        self.most = max(self.most, self.held())


class ChunkedExecutor(LocalExecutor):
    """The in-process executor, two clips at a time, with a channel the test can look into."""

    def __init__(self) -> None:
        super().__init__(chunk_size=2)
        self.channel = CountingStore()

    @contextmanager
    def round_channel(self) -> Iterator[CountingStore]:
        yield self.channel


def test_a_run_leaves_nothing_in_the_channel_and_holds_only_the_clips_in_flight(tmp_path):
    rows = [
        {"clip_id": f"m{i}", "audio_uri": write_clip(tmp_path / f"m{i}.wav", 0.5, f0=150.0 + i)}
        for i in range(6)
    ]
    job = JobSpec(
        manifest_uri=write_manifest(tmp_path / "m.parquet", rows),
        out=str(tmp_path / "runs"),
        run_id="handoff",
        edits=list(parse_chain("loudness=-23")),
        iterations=2,
        executor="local",
    )
    executor = ChunkedExecutor()
    record = run_job(job, executor=executor)
    assert record["counts"]["ok"] == 6 and record["clip_rounds"]["done_now"] == 12
    assert executor.channel.held() == 0
    # two clips in flight, two rounds each: never the whole shard's twelve records
    assert 0 < executor.channel.most <= 4


def test_the_channel_store_loads_nothing_else_of_stepedit():
    """The Ray channel's actor is a `RoundRecordStore`: its process imports this module only,
    so it starts as fast as a bare Ray worker (no numpy, no pyarrow)."""
    check = (
        "import sys, stepedit_core.lifecycle.round_handoff; "
        "print(sorted(m for m in sys.modules if m.startswith(('stepedit', 'numpy', 'pyarrow'))))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        ["stepedit_core", "stepedit_core.lifecycle", "stepedit_core.lifecycle.round_handoff"]
    )
