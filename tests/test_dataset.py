"""Margin sets: (neutral, edited) pairs made by a durable run, scored 1-10, written as a
dataset with a data card and a chart on the review page."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepedit_core.dataset import MarginSpec, build_margin_set
from stepedit_core.dataset.objective import ANCHORS, ObjectiveScorer, markdown_table, to_margin
from stepedit_core.dataset.scorers import Pair
from stepedit_core.demo import demo_clips
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.audio import Audio, sha256_bytes
from stepedit_core.foundation.audio import load as load_audio
from stepedit_core.foundation.edits import parse_edit
from stepedit_core.foundation.failures import RunRefused
from stepedit_flows.cli import main

from conftest import write_clip, write_manifest

ROOT = Path(__file__).resolve().parent.parent
DEMO = {c["clip_id"]: c for c in demo_clips()}
ATTRIBUTES = ["speed=faster", "vad"]
SFT_COLUMNS = {
    "clip_id", "attribute", "instruction", "neutral_uri", "edited_uri", "neutral_sha256",
    "edited_sha256", "margin", "kept", "neutral_tokens", "edited_tokens",
    "neutral_record_sha256", "edited_record_sha256", "license", "consent",
}  # fmt: skip


def _demo_manifest(path: Path) -> str:
    rows = [
        {
            "clip_id": clip,
            "audio_uri": DEMO[clip]["path"],
            "text": DEMO[clip]["text"],
            "license": "CC-BY-4.0",
            "consent": f"signed-{clip}",
            "consent_given": True,
        }
        for clip in ("noisy_01", "pauses_01")
    ]
    rows.append({"clip_id": "gone", "audio_uri": str(Path(DEMO["noisy_01"]["path"]).parent / "x")})
    pq.write_table(pa.Table.from_pylist(rows), path)  # consent_given stays a bool
    return str(path)


def _spec(manifest: str, out: Path, attributes=ATTRIBUTES, **job) -> MarginSpec:
    return MarginSpec.create(
        manifest,
        attributes,
        str(out),
        "set",
        executor="local",
        allow_roots=[str(Path(DEMO["noisy_01"]["path"]).parent)],
        **job,
    )


@pytest.fixture(scope="module")
def signal_set(tmp_path_factory):
    base = tmp_path_factory.mktemp("margin")
    manifest = _demo_manifest(base / "catalog.parquet")
    spec = _spec(manifest, base / "out")
    summary = build_margin_set(spec, executor=LocalExecutor())
    run = base / "out" / "set"
    return spec, summary, run, pq.read_table(run / "dataset" / "sft.parquet").to_pylist()


def _by(rows, clip, attribute):
    return next(r for r in rows if r["clip_id"] == clip and r["attribute"] == attribute)


def test_margin_set_pairs_each_clip_with_each_attribute(signal_set):
    _, summary, run, rows = signal_set
    assert set(rows[0]) >= SFT_COLUMNS
    assert [(r["clip_id"], r["attribute"]) for r in rows] == [
        (c, a) for c in ("noisy_01", "pauses_01", "gone") for a in ATTRIBUTES
    ]
    output = pq.read_table(run / "manifest.parquet").to_pylist()
    records = {
        (r["row_index"], r["iteration"]): r
        for part in sorted((run / "iterations").glob("*.parquet"))
        for r in pq.read_table(
            part, columns=["row_index", "iteration", "record_sha256"]
        ).to_pylist()
    }
    for index, row in enumerate(rows[:4]):
        assert row["status"] == "ok", row["error"]
        assert row["neutral_uri"] == str(Path(DEMO[row["clip_id"]]["path"]).resolve())
        assert row["edited_uri"] == output[index]["output_uri"]
        for side in ("neutral", "edited"):
            assert row[f"{side}_sha256"] == sha256_bytes(Path(row[f"{side}_uri"]).read_bytes())
        assert row["edited_record_sha256"] == records[(index, 1)]["record_sha256"]
        assert row["neutral_record_sha256"] is None  # the source file is the neutral version
        assert row["instruction"] == row["attribute"]  # the signal engine reads no prompt
        assert row["neutral_tokens"] is None and row["edited_tokens"] is None
        assert row["license"] == "CC-BY-4.0" and row["consent"] == f"signed-{row['clip_id']}"
        assert row["consent_given"] is True
        assert row["kept"] == (row["margin"] >= 6)
    assert summary["pairs"] == 6 and summary["kept"] == sum(r["kept"] for r in rows)


def test_margins_follow_what_the_edit_measurably_did(signal_set):
    rows = signal_set[3]
    for clip in ("noisy_01", "pauses_01"):
        speed = _by(rows, clip, "speed=faster")
        assert json.loads(speed["margin_measures_json"])["duration_ratio"] == pytest.approx(
            0.8, abs=0.01
        )
        assert speed["margin"] == 7 and speed["margin_basis"] == "speed_change"
    # the pause-heavy clip loses far more pause time to vad than the noisy one
    pauses, noisy = _by(rows, "pauses_01", "vad"), _by(rows, "noisy_01", "vad")
    assert pauses["margin_basis"] == "pause_share_removed"
    assert pauses["margin_measure"] > noisy["margin_measure"]
    assert pauses["margin"] >= 6 and pauses["kept"]
    assert noisy["margin"] < pauses["margin"]
    for row in rows[:4]:
        assert row["margin"] == to_margin(
            row["margin_measure"], ANCHORS[parse_edit(row["attribute"]).type]
        )


def test_a_failed_row_stays_in_the_set_with_its_error(signal_set):
    rows = signal_set[3]
    for attribute in ATTRIBUTES:
        gone = _by(rows, "gone", attribute)
        assert gone["status"] == "failed" and gone["error_code"] == "missing_file"
        assert "demo/x" in gone["error"] and gone["margin"] is None and gone["kept"] is False


def test_the_set_loads_with_datasets_and_has_a_data_card(signal_set, tmp_path):
    import datasets

    _, summary, run, rows = signal_set
    folder = run / "dataset"
    cache = str(tmp_path / "hf")
    files = str(folder / "sft.parquet")
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=cache)["train"]
    assert loaded.num_rows == 6 and set(loaded.column_names) >= SFT_COLUMNS
    assert (
        datasets.load_dataset(str(folder), cache_dir=cache)["train"].num_rows == 6
    )  # the card's config
    card = (folder / "README.md").read_text()
    kept_speed = sum(r["kept"] for r in rows if r["attribute"] == "speed=faster")
    assert f"| `speed=faster` | 3 | 1 | 2 | {kept_speed} |" in card
    assert "| `speed=faster` | 0 | 0 | 0 | 0 | 0 | 0 | 2 | 0 | 0 | 0 |" in card
    assert json.loads((run / "run.json").read_text())["audit"]["run_digest"] in card
    assert markdown_table() in card  # how the margins were made travels with the set


def test_the_review_page_charts_margins_per_attribute(signal_set):
    run, rows = signal_set[2], signal_set[3]
    page = (run / "report" / "index.html").read_text()
    for attribute in ATTRIBUTES:
        assert f'data-attribute="{attribute}"' in page
        for margin in range(1, 11):
            count = sum(1 for r in rows if r["attribute"] == attribute and r["margin"] == margin)
            kind = "kept" if margin >= 6 else "dropped"
            assert f'class="{kind}" data-margin="{margin}" data-count="{count}"' in page


def test_a_second_build_resumes_the_run_and_changes_nothing(signal_set, tmp_path):
    spec, _, run, rows = signal_set
    before = json.loads((run / "run.json").read_text())
    again = build_margin_set(spec, executor=LocalExecutor())
    assert json.loads((run / "run.json").read_text()) == before  # no second run
    assert pq.read_table(run / "dataset" / "sft.parquet").to_pylist() == rows
    assert again["kept"] == sum(r["kept"] for r in rows)
    stricter = build_margin_set(spec.model_copy(update={"min_margin": 8}), executor=LocalExecutor())
    assert json.loads((run / "run.json").read_text()) == before  # rescored, not edited again
    assert stricter["kept"] == sum(1 for r in rows if (r["margin"] or 0) >= 8) < again["kept"]
    build_margin_set(spec, executor=LocalExecutor())  # back to the fixture's set
    other = spec.model_copy(update={"attributes": (parse_edit("denoise"),)})
    with pytest.raises(RunRefused, match="another manifest or other attributes"):
        build_margin_set(other, executor=LocalExecutor())


def test_the_set_is_the_same_whatever_the_batch_size(signal_set, monkeypatch):
    from stepedit_core.dataset import sft

    spec, _, run, rows = signal_set
    monkeypatch.setattr(sft, "BATCH_ROWS", 4)  # 6 pairs: a batch boundary inside a clip's rows
    build_margin_set(spec, executor=LocalExecutor())
    assert pq.read_table(run / "dataset" / "sft.parquet").to_pylist() == rows


def test_a_pair_whose_file_is_gone_fails_alone(tmp_path):
    rows = [
        {"clip_id": c, "audio_uri": DEMO[c]["path"], "text": DEMO[c]["text"]}
        for c in ("clean_01", "clean_02")
    ]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    spec = _spec(manifest, tmp_path / "o", ["speed=faster"], report="none")
    build_margin_set(spec, executor=LocalExecutor())
    sft = tmp_path / "o" / "set" / "dataset" / "sft.parquet"
    gone = Path(pq.read_table(sft).to_pylist()[0]["edited_uri"])
    gone.unlink()
    build_margin_set(spec, executor=LocalExecutor())
    first, second = pq.read_table(sft).to_pylist()
    assert first["status"] == "failed" and first["error_code"] == "missing_file"
    assert str(gone) in first["error"] and first["kept"] is False
    assert second["status"] == "ok" and second["margin"] == 7 and second["kept"]


CRASHING_BUILD = """
import sys
from stepedit_core.dataset import MarginSpec, build_margin_set
from stepedit_core.executors.local import LocalExecutor
manifest, out, root = sys.argv[1:4]
spec = MarginSpec.create(manifest, ["speed=faster", "vad"], out, "crash", executor="local",
                         shard_size=2, allow_roots=[root], report="none")
print(build_margin_set(spec, executor=LocalExecutor())["kept"])
"""


@pytest.mark.slow
def test_a_killed_margin_set_resumes_exactly_once(tmp_path):
    import os
    import subprocess
    import sys

    manifest = _demo_manifest(tmp_path / "m.parquet")
    root = str(Path(DEMO["noisy_01"]["path"]).parent)
    command = [sys.executable, "-c", CRASHING_BUILD, manifest, str(tmp_path / "o"), root]
    env = {**os.environ, "STEPEDIT_FAILPOINT": "shard.part_committed:1"}
    killed = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    assert killed.returncode == -9, killed.stderr  # SIGKILL after the first shard's part
    run = tmp_path / "o" / "crash"
    assert not (run / "dataset" / "sft.parquet").exists()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    record = json.loads((run / "run.json").read_text())
    assert record["attempt"] == 2
    assert record["clip_rounds"]["resumed"] == 2 and record["clip_rounds"]["done_now"] == 2
    rows = pq.read_table(run / "dataset" / "sft.parquet").to_pylist()
    assert len(rows) == 6 and int(done.stdout.split()[-1]) == sum(r["kept"] for r in rows)
    assert len({r["edited_record_sha256"] for r in rows[:4]}) == 4


def test_a_margin_set_in_s3(s3):
    from conftest import put_clip

    uris = [put_clip(s3, "catalog/margin/a.flac", 1.0), put_clip(s3, "catalog/margin/b.flac", 0.8)]
    sink = io.BytesIO()
    pq.write_table(
        pa.table({"clip_id": ["a", "b"], "audio_uri": uris, "license": ["x", "y"]}), sink
    )
    s3.pipe("catalog/margin/m.parquet", sink.getvalue())
    spec = MarginSpec.create(
        "s3://catalog/margin/m.parquet", ["speed=slower"], "s3://runs/margins", "s3set",
        executor="local", report="none",
    )  # fmt: skip
    summary = build_margin_set(spec, executor=LocalExecutor())
    assert summary["sft"] == "s3://runs/margins/s3set/dataset/sft.parquet"
    with s3.open("runs/margins/s3set/dataset/sft.parquet", "rb") as handle:
        rows = pq.read_table(handle).to_pylist()
    assert [(r["clip_id"], r["status"], r["margin"], r["license"]) for r in rows] == [
        ("a", "ok", 7, "x"),
        ("b", "ok", 7, "y"),
    ]
    assert rows[0]["neutral_uri"] == "s3://catalog/margin/a.flac"
    assert rows[0]["edited_sha256"] == sha256_bytes(s3.cat(rows[0]["edited_uri"]))
    assert s3.exists("runs/margins/s3set/dataset/README.md")
    assert not [p for p in s3.ls("runs/margins/s3set/dataset") if ".tmp-" in p]


# --- the objective mapping --------------------------------------------------------------------


def _tone(seconds: float, level: float = 0.3, rate: int = 16000) -> Audio:
    t = np.arange(int(seconds * rate)) / rate
    return Audio((level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None], rate)


def test_anchors_map_to_one_and_ten_and_clip():
    anchor = ANCHORS["loudness"]
    assert to_margin(0.0, anchor) == 1 and to_margin(12.0, anchor) == 10
    assert to_margin(-3.0, anchor) == 1 and to_margin(30.0, anchor) == 10
    assert to_margin(6.0, anchor) == 6  # 5.5 rounds half up


def test_speed_in_the_wrong_direction_scores_one():
    scorer = ObjectiveScorer()
    faster = parse_edit("speed=faster")
    assert scorer.score(Pair(faster, _tone(1.0), _tone(0.8))).value == 7
    assert scorer.score(Pair(faster, _tone(1.0), _tone(1.25))).value == 1
    assert scorer.score(Pair(parse_edit("speed=slower"), _tone(1.0), _tone(1.25))).value == 7


def test_loudness_moved_either_way_scores_the_same():
    scorer = ObjectiveScorer()
    quieter = scorer.score(Pair(parse_edit("loudness=-35"), _tone(2.0), _tone(2.0, 0.3 / 4)))
    louder = scorer.score(Pair(parse_edit("loudness=-12"), _tone(2.0, 0.3 / 4), _tone(2.0)))
    assert quieter.measure == pytest.approx(12.04, abs=0.05) and quieter.value == 10
    assert louder.value == quieter.value
    short = scorer.score(Pair(parse_edit("loudness=-20"), _tone(0.2), _tone(0.2)))
    assert short.value is None and "not measurable" in short.note


def test_denoise_with_dnsmos_takes_the_larger_margin(monkeypatch):
    from stepedit_core.dataset.scorers import ScorerUnavailable
    from stepedit_core.quality import qc

    clean = load_audio(DEMO["clean_01"]["path"])[0]  # speech: DNSMOS rates speech
    noise = np.random.default_rng(0).normal(0, 0.03, clean.samples.shape).astype(np.float32)
    pair = Pair(parse_edit("denoise"), Audio(clean.samples + noise, clean.sample_rate), clean)
    floor_only = ObjectiveScorer().score(pair)
    both = ObjectiveScorer(dnsmos=True).score(pair)  # the test extra installs qc-heavy
    assert "dnsmos_ovrl_gained" not in floor_only.measures
    assert both.measures["dnsmos_ovrl_gained"] > 0
    assert both.value == max(
        floor_only.value, to_margin(both.measures["dnsmos_ovrl_gained"], ANCHORS["denoise_dnsmos"])
    )
    monkeypatch.setattr(qc, "dnsmos_unavailable", lambda: "speechmos not installed")
    with pytest.raises(ScorerUnavailable, match="speechmos not installed"):
        ObjectiveScorer(dnsmos=True)


def test_attributes_without_an_objective_measure_are_refused():
    scorer = ObjectiveScorer()
    assert "needs a judge" in scorer.refusal(parse_edit("emotion=happy"))
    assert scorer.refusal(parse_edit("speed=1.0")) is not None
    assert scorer.refusal(parse_edit("denoise")) is None


def test_readme_has_the_anchor_table():
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- margin-anchors:start -->\n", "<!-- margin-anchors:end -->"
    assert readme[readme.index(start) + len(start) : readme.index(end)] == markdown_table()


# --- the model engine: tokens and the neutral clone ------------------------------------------


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny stand-in tensors: threads only add contention
    yield
    torch.set_num_threads(threads)


def test_model_engine_pairs_carry_tokens_and_the_clone(tmp_path, one_torch_thread):
    from stepedit_core.engines.stepaudio.prompts import instruction_text

    from stepaudio_standins import shared_standins

    models, src = shared_standins()
    clip = write_clip(tmp_path / "a.wav", 1.2)
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"clip_id": "a", "audio_uri": clip, "text": "hello world", "license": "own"}],
    )
    spec = MarginSpec.create(
        manifest, ["denoise"], str(tmp_path / "out"), "m1", engine="step-audio-editx",
        models_dir=str(models), stepaudio_src=str(src), executor="local", report="none",
    )  # fmt: skip
    build_margin_set(spec, executor=LocalExecutor())
    run = tmp_path / "out" / "m1"
    (row,) = pq.read_table(run / "dataset" / "sft.parquet").to_pylist()
    records = {
        r["iteration"]: r
        for part in sorted((run / "iterations").glob("*.parquet"))
        for r in pq.read_table(part).to_pylist()
    }
    clone, edit = records[0], records[1]
    assert clone["edit"] == "clone" and edit["edit"] == "denoise"
    assert row["status"] == "ok", row["error"]
    assert row["instruction"] == instruction_text(parse_edit("denoise"), "hello world")
    assert row["instruction"] == edit["instruction"]
    assert row["neutral_tokens"] == clone["output_tokens"] and row["neutral_tokens"]
    assert row["edited_tokens"] == edit["output_tokens"] and row["edited_tokens"]
    assert row["edited_input_tokens"] == edit["input_tokens"]
    assert row["neutral_record_sha256"] == clone["record_sha256"]
    assert row["edited_record_sha256"] == edit["record_sha256"]
    # the neutral version is the clone's own audio, written into the set
    neutral = Path(row["neutral_uri"])
    assert neutral.parent == run / "dataset" / "neutral"
    assert row["neutral_sha256"] == sha256_bytes(neutral.read_bytes()) == clone["output_sha256"]
    assert row["license"] == "own" and row["margin"] is not None


# --- the command line --------------------------------------------------------------------------


def test_cli_refuses_judge_and_attributes_it_can_not_score(tmp_path, capsys):
    manifest = _demo_manifest(tmp_path / "m.parquet")
    base = ["dataset", "margin", manifest, "--out", str(tmp_path / "o"), "--run-id", "x"]
    assert main([*base, "--attribute", "vad", "--judge", "gemini"]) == 2
    assert "the gemini judge needs --model" in capsys.readouterr().err
    assert main([*base, "--attribute", "emotion=happy"]) == 2
    assert "emotion needs a judge" in capsys.readouterr().err
    code = main([*base, "--attribute", "speed=1.3", "--engine", "step-audio-editx"])
    assert code == 2 and "valid options: faster" in capsys.readouterr().err
    assert main([*base, "--attribute", "clone"]) == 2
    assert "neutral version" in capsys.readouterr().err
    assert not (tmp_path / "o" / "x" / "run.json").exists()


@pytest.mark.slow
def test_cli_makes_a_margin_set_through_prefect_and_ray(
    tmp_path, prefect_server, ray_cluster, capsys
):
    manifest = _demo_manifest(tmp_path / "m.parquet")
    args = [
        "dataset", "margin", manifest, "--out", str(tmp_path / "o"), "--run-id", "cli",
        "--attribute", "speed=faster", "--allow-root", str(Path(DEMO["noisy_01"]["path"]).parent),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "margin set cli: 3 pair(s), 2 kept" in out and "sft.parquet" in out
    rows = pq.read_table(tmp_path / "o" / "cli" / "dataset" / "sft.parquet").to_pylist()
    assert [r["margin"] for r in rows] == [7, 7, None]
    assert main(args) == 0  # finished: the set is written again, nothing is edited again
    assert json.loads((tmp_path / "o" / "cli" / "run.json").read_text())["attempt"] == 1

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["stepedit-margin-set-cli"]))
        )
    assert artifacts and "| `speed=faster` | 3 | 1 | 2 | 2 | 66.7% |" in artifacts[0].data
