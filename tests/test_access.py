"""Allowed roots: an audio_uri outside them (after `..` and symlinks) is refused at plan time
and never opened; storage options are recorded by name only."""

import json
import os

import pyarrow.parquet as pq
import pytest

from stepedit_core.catalog.access import (
    REDACTED,
    AllowedRoots,
    default_root,
    redact,
    resolve,
    storage_options_installed,
)
from stepedit_core.foundation import audio as audio_io
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.cli import main

from conftest import run_inprocess, write_clip, write_manifest


def refused(roots: AllowedRoots, uri: str) -> bool:
    try:
        roots.check(uri)
    except ItemFailure as failure:
        assert failure.code == "uri_not_allowed"
        return True
    return False


def test_dot_dot_can_not_leave_a_local_root(tmp_path):
    (tmp_path / "catalog").mkdir()
    roots = AllowedRoots([str(tmp_path / "catalog")])
    assert refused(roots, str(tmp_path / "catalog" / ".." / "secret.wav"))
    assert refused(roots, str(tmp_path / "catalog" / "a" / ".." / ".." / "secret.wav"))
    inside = roots.check(str(tmp_path / "catalog" / "x" / ".." / "a.wav"))
    assert inside == os.path.realpath(tmp_path / "catalog" / "a.wav")


def test_a_sibling_folder_sharing_the_prefix_is_outside(tmp_path):
    roots = AllowedRoots([str(tmp_path / "cat")])
    assert refused(roots, str(tmp_path / "catalog" / "a.wav"))
    assert not refused(roots, str(tmp_path / "cat" / "a.wav"))


def test_symlinks_are_followed_before_comparing(tmp_path):
    root, outside = tmp_path / "catalog", tmp_path / "private"
    root.mkdir()
    outside.mkdir()
    target = write_clip(outside / "voice.wav", 0.5)
    (root / "link.wav").symlink_to(target)  # a file link leading out
    (root / "dir").symlink_to(outside, target_is_directory=True)  # a folder link leading out
    (root / "local.wav").symlink_to(write_clip(root / "real.wav", 0.5))  # stays inside
    roots = AllowedRoots([str(root)])
    assert refused(roots, str(root / "link.wav"))
    assert refused(roots, str(root / "dir" / "voice.wav"))
    assert roots.check(str(root / "local.wav")) == os.path.realpath(root / "real.wav")


def test_a_root_given_through_a_symlink_is_resolved_too(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    roots = AllowedRoots([str(tmp_path / "alias")])
    assert not refused(roots, str(real / "a.wav"))


def test_object_store_buckets_and_protocols():
    roots = AllowedRoots(["s3://studio/catalog"])
    assert roots.check("s3://studio/catalog/a/../b.flac") == "s3://studio/catalog/b.flac"
    assert refused(roots, "s3://studio/catalog/../private/b.flac")
    assert refused(roots, "s3://studio/catalog/../../other/catalog/b.flac")  # climbs buckets
    assert refused(roots, "s3://other/catalog/b.flac")
    assert refused(roots, "s3://studio/catalogue/b.flac")
    assert refused(roots, "gs://studio/catalog/b.flac")  # same path, another protocol
    assert refused(roots, "/studio/catalog/b.flac")  # a local path is another protocol
    assert refused(roots, "simplecache::s3://studio/catalog/b.flac")  # chains not resolved
    assert resolve("S3://studio//catalog/./x.flac").uri() == "s3://studio/catalog/x.flac"


def test_local_roots_do_not_admit_object_store_uris(tmp_path):
    roots = AllowedRoots([str(tmp_path)])
    assert refused(roots, f"s3://bucket{tmp_path}/a.wav")
    assert roots.check(f"file://{tmp_path}/a.wav") == os.path.realpath(tmp_path / "a.wav")


def test_default_root_is_the_manifests_folder(tmp_path):
    (tmp_path / "catalog").mkdir()
    assert default_root(str(tmp_path / "catalog" / "m.parquet")) == os.path.realpath(
        tmp_path / "catalog"
    )
    assert default_root("s3://studio/catalog/m.parquet") == "s3://studio/catalog"
    roots = AllowedRoots.for_manifest(str(tmp_path / "catalog" / "m.parquet"))
    assert refused(roots, str(tmp_path / "a.wav"))
    assert not refused(roots, str(tmp_path / "catalog" / "clips" / "a.wav"))
    given = AllowedRoots.for_manifest(str(tmp_path / "catalog" / "m.parquet"), [str(tmp_path)])
    assert not refused(given, str(tmp_path / "a.wav"))


def test_rows_outside_the_roots_fail_and_are_never_opened(tmp_path, monkeypatch):
    catalog, outside = tmp_path / "catalog", tmp_path / "outside"
    catalog.mkdir()
    outside.mkdir()
    not_audio = outside / "notes.wav"
    not_audio.write_text("not audio")  # opened, this would fail as not_audio
    elsewhere = write_clip(outside / "voice.wav", 0.6)  # opened, this would edit fine
    (catalog / "link.wav").symlink_to(elsewhere)
    good = write_clip(catalog / "good.wav", 0.6)
    rows = [
        {"clip_id": "good", "audio_uri": good},
        {"clip_id": "dotdot", "audio_uri": str(catalog / ".." / "outside" / "notes.wav")},
        {"clip_id": "link", "audio_uri": str(catalog / "link.wav")},
        {"clip_id": "absolute", "audio_uri": elsewhere},
    ]
    manifest = write_manifest(catalog / "m.parquet", rows)
    opened: list[str] = []
    real_read = audio_io.read_bytes

    def recording_read(uri: str, *limits) -> bytes:
        opened.append(uri)
        return real_read(uri, *limits)

    monkeypatch.setattr(audio_io, "read_bytes", recording_read)
    job = JobSpec(
        manifest_uri=manifest, out=str(tmp_path / "out"), run_id="r", edits=["speed=1.25"]
    )
    record = run_inprocess(job)

    table = pq.read_table(tmp_path / "out" / "r" / "manifest.parquet").to_pylist()
    assert [r["status"] for r in table] == ["ok", "failed", "failed", "failed"]
    assert [r["error_code"] for r in table[1:]] == ["uri_not_allowed"] * 3
    assert "outside the allowed roots" in table[2]["error"]
    assert str(catalog) in table[2]["error"]
    assert sorted(set(opened)) == [os.path.realpath(good)]  # only the row inside was read
    assert record["counts"]["refused_at_plan"] == 3
    assert record["errors_by_code"] == {"uri_not_allowed": 3}


def test_an_allowed_root_admits_rows_outside_the_manifest_folder(tmp_path):
    catalog, clips = tmp_path / "catalog", tmp_path / "clips"
    catalog.mkdir()
    clips.mkdir()
    manifest = write_manifest(
        catalog / "m.parquet", [{"clip_id": "a", "audio_uri": write_clip(clips / "a.wav", 0.6)}]
    )
    job = JobSpec(
        manifest_uri=manifest,
        out=str(tmp_path / "out"),
        run_id="r",
        edits=["speed=1.25"],
        allow_roots=[str(clips)],
    )
    record = run_inprocess(job)
    assert record["counts"]["ok"] == 1
    assert record["parameters"]["allow_roots"] == [str(clips)]


def test_validate_names_rows_outside_the_roots(tmp_path, capsys):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    outside = write_clip(tmp_path / "a.wav", 0.5)
    manifest = write_manifest(catalog / "m.parquet", [{"clip_id": "a", "audio_uri": outside}])
    # its only row outside the roots: validate refuses as run would, naming the root to allow
    assert main(["validate", manifest, "--edit", "denoise"]) == 2
    out = capsys.readouterr()
    assert "uri_not_allowed" in out.out and "outside the allowed roots" in out.err
    assert f"--allow-root {tmp_path}" in out.err
    assert main(["validate", manifest, "--edit", "denoise", "--allow-root", str(tmp_path)]) == 0
    assert "1 row(s) ready" in capsys.readouterr().out


def test_storage_options_are_recorded_by_name_only(tmp_path):
    options = {"key": "AKIAFAKE", "secret": "s3cr3t", "client_kwargs": {"endpoint_url": "x"}}
    assert redact(options) == {
        "key": REDACTED,
        "secret": REDACTED,
        "client_kwargs": {"endpoint_url": REDACTED},
    }
    job = JobSpec(manifest_uri="m", out="o", run_id="r", storage_options=options)
    dumped = json.dumps(job.model_dump(mode="json")) + repr(job) + str(job.model_dump())
    assert "AKIAFAKE" not in dumped and "s3cr3t" not in dumped
    assert job.storage_options == options  # the job itself still holds them


def test_storage_options_become_fsspec_defaults_for_remote_protocols_only():
    import fsspec.config

    before = dict(fsspec.config.conf)
    with storage_options_installed({"anon": True}, ["s3://a/m.parquet", "/local/out"]):
        assert fsspec.config.conf["s3"]["anon"] is True
        assert json.loads(os.environ["FSSPEC_S3"]) == fsspec.config.conf["s3"]
        assert "file" not in fsspec.config.conf
    assert dict(fsspec.config.conf) == before and "FSSPEC_S3" not in os.environ


def test_storage_options_must_be_a_json_object(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["validate", "m.parquet", "--edit", "denoise", "--storage-options", "[1]"])
    assert "JSON object" in capsys.readouterr().err
