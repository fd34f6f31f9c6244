"""Audit: sealed round records, the run digest, `stepedit verify` and `stepedit audit`.

One small real run (local executor, 4 clips, 2 rounds of loudness=-23, two shards); each test
tampers with its own copy and checks that verify names exactly what was changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepedit_core.audit import (
    AUDIT_KEY_ENV,
    AuditError,
    clip_history,
    delivered_round,
    record_digest,
    seal,
    verify_run,
    write_sealed_run_json,
)
from stepedit_core.engines import round_record_schema
from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.cli import main

from conftest import run_inprocess, write_clip, write_manifest

CLIPS = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("audit")
    clips = base / "clips"
    clips.mkdir()
    rows = [
        {
            "clip_id": cid,
            "audio_uri": write_clip(clips / f"{cid}.wav", 0.6 + 0.1 * i, f0=150 + 20 * i),
        }
        for i, cid in enumerate(CLIPS)
    ]
    job = JobSpec(
        manifest_uri=write_manifest(base / "catalog.parquet", rows),
        out=str(base / "runs"),
        run_id="r1",
        edits=["loudness=-23"],
        iterations=2,
        executor="local",
        shard_size=2,
    )
    run_inprocess(job)
    return base / "runs" / "r1"


@pytest.fixture()
def run_copy(finished_run, tmp_path) -> Path:
    target = tmp_path / "runs" / "r1"
    shutil.copytree(finished_run, target)
    return target


def _verify(run: Path):
    return verify_run(str(run.parent), run.name)


def _kinds(report) -> set[tuple[str, str | None]]:
    return {(m.kind, m.clip_id) for m in report.mismatches}


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _records(run: Path) -> list[dict]:
    rows = []
    for part in sorted((run / "iterations").glob("*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


# ------------------------------------------------------------------ seal


def test_seal_covers_every_field_and_survives_parquet():
    record = {
        "clip_id": "x",
        "iteration": 1,
        "edit": "loudness=-23",
        "input_sha256": "aa",
        "output_sha256": hashlib.sha256(b"flac").hexdigest(),
        "peak_dbfs": -3,  # an int in a float64 column reads back as -3.0
        "rms_dbfs": -20.123456789,
        "input_tokens": [1, 2, 3],
        "audio_flac": b"flac",
    }
    sealed = seal(record, "source-sha")
    assert sealed["prev_record_sha256"] == "source-sha"
    table = pa.Table.from_pylist([sealed], round_record_schema())
    back = table.to_pylist()[0]
    assert back["peak_dbfs"] == -3.0 and back["instruction"] is None
    assert record_digest(back) == sealed["record_sha256"]
    for name, value in [
        ("edit", "loudness=-24"),
        ("rms_dbfs", -20.12345679),
        ("input_tokens", [1, 2]),
    ]:
        assert record_digest(dict(back, **{name: value})) != sealed["record_sha256"], name
    assert record_digest(dict(back, prev_record_sha256="other")) != sealed["record_sha256"]
    # the audio is covered through output_sha256, which seal checks against the bytes
    with pytest.raises(AuditError):
        seal(dict(record, audio_flac=b"flaC"), "source-sha")


# ------------------------------------------------------------------ the real run


def test_untouched_run_verifies_clean(finished_run, capsys):
    report = _verify(finished_run)
    assert report.intact, report.text()
    objects = {r["audio_ref"] for r in _records(finished_run)}
    assert all(ref.startswith("round-audio/") for ref in objects)
    assert report.checked == {
        "part files": 2,
        "records": 8,
        "round audio objects": len(objects),
        "clips": 4,
        "delivered files": 4,
    }
    run_json = json.loads((finished_run / "run.json").read_text())
    assert run_json["audit"]["run_digest"] == report.run_digest
    assert run_json["audit"]["records"] == 8
    seal_line = (finished_run / "run.json.sha256").read_text().split()
    assert seal_line == [
        hashlib.sha256((finished_run / "run.json").read_bytes()).hexdigest(),
        "run.json",
    ]
    assert main(["verify", str(finished_run)]) == 0
    assert "intact" in capsys.readouterr().out


def test_records_form_a_chain_from_the_source(finished_run):
    records = _records(finished_run)
    source = Path(finished_run.parent.parent / "clips" / "b.wav").read_bytes()
    r1, r2 = sorted((r for r in records if r["clip_id"] == "b"), key=lambda r: r["iteration"])
    assert r1["prev_record_sha256"] == r1["input_sha256"] == hashlib.sha256(source).hexdigest()
    assert r2["prev_record_sha256"] == r1["record_sha256"]
    assert r2["input_sha256"] == r1["output_sha256"]
    assert all(record_digest(r) == r["record_sha256"] for r in records)


def test_flipped_byte_in_delivered_audio_is_named(run_copy, capsys):
    target = next((run_copy / "audio").glob("*-c.flac"))
    _flip(target, target.stat().st_size // 2)
    report = _verify(run_copy)
    assert _kinds(report) == {("delivered_altered", "c")}
    assert report.mismatches[0].object == f"audio/{target.name}"
    assert main(["verify", str(run_copy)]) == 1
    out = capsys.readouterr().out
    assert "delivered_altered" in out and "'c'" in out and target.name in out


def _column_chunk(path: Path, column: str) -> tuple[int, int]:
    meta = pq.ParquetFile(path).metadata.row_group(0)
    names = [meta.column(i).path_in_schema for i in range(meta.num_columns)]
    chunk = meta.column(names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    return start, start + chunk.total_compressed_size


def _reads(path: Path) -> list[dict] | None:
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError):
        return None


def test_flipped_byte_in_a_referenced_round_object_is_named(run_copy, capsys):
    records = _records(run_copy)
    ref = next(r for r in records if r["clip_id"] == "c" and r["iteration"] == 1)["audio_ref"]
    target = run_copy / ref
    _flip(target, target.stat().st_size // 2)
    # rounds that made the same bytes share one object: each of them is named
    sharing = [r for r in records if r["audio_ref"] == ref]
    report = _verify(run_copy)
    assert _kinds(report) == {("audio_altered", r["clip_id"]) for r in sharing}
    assert {m.object for m in report.mismatches} == {ref}
    assert sorted(m.detail.split(":")[0] for m in report.mismatches) == sorted(
        f"round {r['iteration']}" for r in sharing
    )
    assert main(["verify", str(run_copy)]) == 1
    assert "audio_altered" in capsys.readouterr().out


def test_a_missing_round_object_is_named(run_copy):
    records = _records(run_copy)
    ref = next(r for r in records if r["clip_id"] == "d" and r["iteration"] == 2)["audio_ref"]
    (run_copy / ref).unlink()
    report = _verify(run_copy)
    sharing = {r["clip_id"] for r in records if r["audio_ref"] == ref}
    assert _kinds(report) == {("audio_missing", clip) for clip in sharing}


def test_a_copied_run_follows_its_own_objects(run_copy, finished_run):
    """References are relative to the run folder: a copy checks its own objects, and damage
    to the original's does not show in the copy."""
    ref = _records(finished_run)[0]["audio_ref"]
    assert (run_copy / ref).read_bytes() == (finished_run / ref).read_bytes()
    (run_copy / ref).unlink()
    assert not _verify(run_copy).intact
    assert _verify(finished_run).intact


def test_flipped_byte_in_part_that_no_longer_reads_names_lost_clips(run_copy, capsys):
    part = sorted((run_copy / "iterations").glob("*.parquet"))[0]
    clips = {r["clip_id"] for r in pq.read_table(part).to_pylist()}
    pristine = part.read_bytes()
    start, end = _column_chunk(part, "record_sha256")
    broken = False
    for offset in range(start + 8, end):  # past the page header: compressed record data
        _flip(part, offset)
        if _reads(part) is None:
            broken = True
            break
        part.write_bytes(pristine)
    assert broken, "no byte of the record_sha256 column makes the part unreadable"
    report = _verify(run_copy)
    kinds = _kinds(report)
    assert ("part_unreadable", None) in kinds
    unreadable = next(m for m in report.mismatches if m.kind == "part_unreadable")
    assert unreadable.object.startswith(f"iterations/{part.name}")
    assert all(c in unreadable.detail for c in clips)
    # the index still says where each lost record was: every one is named
    missing = {(m.clip_id, m.detail) for m in report.mismatches if m.kind == "record_missing"}
    assert missing == {(c, f"round {k}") for c in clips for k in (1, 2)}
    assert ("run_digest_mismatch", None) in kinds
    assert main(["verify", str(run_copy), "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["intact"] is False and len(payload["mismatches"]) == len(report.mismatches)


def test_flipped_byte_in_run_json_is_named(run_copy):
    path = run_copy / "run.json"
    text = path.read_text()
    offset = text.index('"started_at": "') + len('"started_at": "') + 3  # a digit of the year
    _flip(path, offset)
    assert json.loads(path.read_text())  # still valid JSON: only the seal can tell
    report = _verify(run_copy)
    assert _kinds(report) == {("run_json_altered", None)}
    assert report.mismatches[0].object == "run.json"


def test_rewritten_record_field_is_named(run_copy):
    part = sorted((run_copy / "iterations").glob("*.parquet"))[1]
    table = pq.read_table(part)
    edits = table.column("edit").to_pylist()
    edits[0] = "loudness=-16"  # someone "corrects" the record of what was done
    table = table.set_column(table.schema.get_field_index("edit"), "edit", pa.array(edits))
    pq.write_table(table, part)
    clip = table.column("clip_id")[0].as_py()
    report = _verify(run_copy)
    assert ("record_altered", clip) in _kinds(report)
    assert {m.kind for m in report.mismatches} == {"record_altered"}


def test_deleted_record_is_named(run_copy):
    part = next(
        p
        for p in sorted((run_copy / "iterations").glob("*.parquet"))
        if "b" in pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist()
    )
    table = pq.read_table(part)
    keep = [
        not (c == "b" and i == 1)
        for c, i in zip(
            table.column("clip_id").to_pylist(),
            table.column("iteration").to_pylist(),
            strict=True,
        )
    ]
    pq.write_table(table.filter(pa.array(keep)), part)
    report = _verify(run_copy)
    kinds = _kinds(report)
    assert ("record_missing", "b") in kinds
    assert ("chain_broken", "b") in kinds  # round 2 no longer starts from the source
    assert ("rounds_mismatch", "b") in kinds  # the manifest says 2 rounds
    assert ("run_digest_mismatch", None) in kinds
    assert {clip for _, clip in kinds} == {"b", None}
    assert next(m for m in report.mismatches if m.kind == "record_missing").detail == "round 1"


# ------------------------------------------------------------------ audit


def test_audit_prints_the_chain(finished_run, capsys):
    assert main(["audit", str(finished_run), "b"]) == 0
    text = capsys.readouterr().out
    records = sorted(
        (r for r in _records(finished_run) if r["clip_id"] == "b"), key=lambda r: r["iteration"]
    )
    for r in records:
        assert r["record_sha256"] in text and r["output_sha256"] in text
    assert "round 1  loudness=-23" in text and "round 2  loudness=-23" in text
    assert "matches the delivered round" in text and "chain intact" in text
    assert "peak_dbfs=" in text

    assert main(["audit", str(finished_run), "b", "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    assert [r["iteration"] for r in history["rounds"]] == [1, 2]
    assert history["source"]["sha256"] == records[0]["input_sha256"]
    assert history["rounds"][1]["prev_record_sha256"] == history["rounds"][0]["record_sha256"]
    assert history["final"]["delivered_ok"] is True and history["intact"] is True
    assert "audio_flac" not in history["rounds"][0]

    assert main(["audit", str(finished_run), "nope"]) == 1
    assert "no clip 'nope'" in capsys.readouterr().err


def test_audit_flags_a_broken_link(run_copy):
    target = next((run_copy / "audio").glob("*-a.flac"))
    _flip(target, target.stat().st_size - 10)
    history = clip_history(str(run_copy.parent), run_copy.name, "a")
    assert history["intact"] is False and history["final"]["delivered_ok"] is False
    assert clip_history(str(run_copy.parent), run_copy.name, "b")["intact"] is True


def test_sources_are_checked_on_request(finished_run, capsys):
    assert main(["verify", str(finished_run), "--sources"]) == 0
    assert "4 source files" in capsys.readouterr().out
    source = finished_run.parent.parent / "clips" / "d.wav"
    pristine = source.read_bytes()
    try:
        _flip(source, len(pristine) - 3)
        report = verify_run(str(finished_run.parent), finished_run.name, check_sources=True)
        assert _kinds(report) == {("source_changed", "d")}
        assert verify_run(str(finished_run.parent), finished_run.name).intact
    finally:
        source.write_bytes(pristine)


def test_run_from_before_the_audit_trail_says_so(run_copy):
    for part in (run_copy / "iterations").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["record_sha256", "prev_record_sha256"]), part)
    report = _verify(run_copy)
    assert [m.kind for m in report.mismatches] == ["unaudited_run"]


def test_run_json_signed_with_a_key(run_copy, monkeypatch):
    store = RunStore(str(run_copy.parent), run_copy.name)
    record = json.loads((run_copy / "run.json").read_text())
    monkeypatch.setenv(AUDIT_KEY_ENV, "studio-secret")
    write_sealed_run_json(store, record)
    assert (run_copy / "run.json.sha256").read_text().startswith("hmac-sha256:")
    assert _verify(run_copy).intact

    monkeypatch.setenv(AUDIT_KEY_ENV, "another-key")
    assert _kinds(_verify(run_copy)) == {("run_json_altered", None)}
    monkeypatch.delenv(AUDIT_KEY_ENV)
    assert _kinds(_verify(run_copy)) == {("run_json_unverifiable", None)}

    # an edit re-sealed with a plain sha256 (all one can do without the key) is caught
    record["counts"]["failed"] = 0
    write_sealed_run_json(store, record)
    monkeypatch.setenv(AUDIT_KEY_ENV, "studio-secret")
    assert _kinds(_verify(run_copy)) == {("run_json_unsigned", None)}


def test_delivered_round_is_the_selected_one_else_the_last():
    rounds = [{"iteration": 1}, {"iteration": 2}, {"iteration": 3}]
    assert delivered_round(rounds)["iteration"] == 3
    assert (
        delivered_round([dict(r, selected=r["iteration"] == 2) for r in rounds])["iteration"] == 2
    )
    assert delivered_round([]) == {}
