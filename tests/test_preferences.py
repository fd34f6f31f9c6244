"""Preference pairs from a run judged by the test judge server, human ratings imported from a
file (JSON and CSV) as sealed records, and the token columns with the model engine's stand-ins."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from judge_server import KEY, JudgeServer

from stepedit_core.audit import clip_history, format_history, verify_run
from stepedit_core.dataset.preferences import build_preferences, judge_pairs, rating_pairs
from stepedit_core.dataset.ratings import import_ratings
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.audio import sha256_bytes
from stepedit_core.foundation.edits import parse_chain, parse_edit
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.judges.http import HttpPolicy
from stepedit_core.judges.judging import judge_run
from stepedit_core.judges.spec import JudgeSpec
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.cli import main

from conftest import run_inprocess, write_clip, write_manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FAST = HttpPolicy(timeout_s=10, attempts=3, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory):
    """Two clips (1.0 s) made faster twice (0.8 s, 0.64 s) and judged by the test server,
    which hears `happy` under 0.9 s: the source is `natural`, both rounds land."""
    base = tmp_path_factory.mktemp("prefs")
    rows = [
        {"clip_id": f"c{i}", "audio_uri": write_clip(base / f"c{i}.wav", 1.0, seed=i),
         "language": "en", "eval_task": "emotion", "eval_label": "happy"}
        for i in range(2)
    ]  # fmt: skip
    out = base / "runs"
    job = JobSpec(manifest_uri=write_manifest(base / "m.parquet", rows), out=str(out),
                  run_id="r", edits=(parse_edit("speed=faster"),), iterations=2,
                  executor="local")  # fmt: skip
    run_inprocess(job)
    server = JudgeServer()
    url = server.start()
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFS_TEST_KEY", KEY)
    try:
        spec = JudgeSpec(kind="gemini", endpoint=url, model="judge-m", key_env="PREFS_TEST_KEY")
        judge = spec.judge(str(out))
        judge.policy = FAST
        judge_run(str(out), "r", judge, LocalExecutor())
    finally:
        server.stop()
        mp.undo()
    return out / "r"


def _records(run: Path) -> dict[tuple[str, int], dict]:
    return {
        (r["clip_id"], r["iteration"]): r
        for part in (run / "iterations").glob("*.parquet")
        for r in pq.read_table(part).to_pylist()
    }


def test_judged_rounds_make_chosen_rejected_pairs_that_load_as_a_dataset(judged_run, tmp_path):
    summary = build_preferences(str(judged_run.parent), "r", str(tmp_path / "prefs"))
    rows = pq.read_table(tmp_path / "prefs" / "preferences.parquet").to_pylist()
    assert summary["pairs"] == len(rows) == 4  # per clip: round 1 and round 2 over the source
    assert {(r["clip_id"], r["chosen_iteration"], r["rejected_iteration"]) for r in rows} == {
        (c, k, 0) for c in ("c0", "c1") for k in (1, 2)
    }
    records = _records(judged_run)
    for r in rows:
        assert (r["preference_source"], r["judge"], r["judge_model"]) == (
            "judge",
            "gemini",
            "judge-m",
        )
        assert (r["chosen_verdict"], r["rejected_verdict"]) == ("happy", "natural")
        chosen = records[(r["clip_id"], r["chosen_iteration"])]
        assert (
            r["chosen_sha256"]
            == chosen["output_sha256"]
            == sha256_bytes(Path(r["chosen_uri"]).read_bytes())
        )
        assert r["chosen_round_sha256"] == chosen["record_sha256"]
        # iteration 0 is the source file, by its own URI and hash
        assert r["rejected_uri"] == str(judged_run.parent.parent / f"{r['clip_id']}.wav")
        assert r["rejected_sha256"] == sha256_bytes(Path(r["rejected_uri"]).read_bytes())
        assert r["prompt"] is None and r["chosen"] is None  # the signal engine makes no tokens
    card = (tmp_path / "prefs" / "README.md").read_text()
    assert "| gemini judge-m | 4 |" in card and "| 1>0 | 2 |" in card

    import datasets

    loaded = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "prefs" / "preferences.parquet")
    )
    assert loaded["train"].num_rows == 4
    assert datasets.load_dataset(str(tmp_path / "prefs"))["train"].num_rows == 4


def test_the_pairs_are_the_same_whatever_the_batch_size(judged_run, tmp_path, monkeypatch):
    from stepedit_core.dataset import preferences

    build_preferences(str(judged_run.parent), "r", str(tmp_path / "a"))
    monkeypatch.setattr(preferences, "BATCH_ROWS", 1)  # one clip per batch
    build_preferences(str(judged_run.parent), "r", str(tmp_path / "b"))
    a, b = (pq.read_table(tmp_path / d / "preferences.parquet") for d in ("a", "b"))
    uris = ["chosen_uri", "rejected_uri"]
    assert a.drop_columns(uris).equals(b.drop_columns(uris))
    assert pq.ParquetFile(tmp_path / "b" / "preferences.parquet").num_row_groups == 2


def test_pair_rules_labels_paralinguistic_margin_and_rating_margin():
    def verdict(iteration, correct, score=None, task="emotion"):
        return {"iteration": iteration, "status": "ok", "correct": correct, "score": score,
                "task": task}  # fmt: skip

    pairs = judge_pairs([verdict(0, False), verdict(1, True), verdict(2, True)])
    assert sorted((a["iteration"], b["iteration"]) for a, b in pairs) == [(1, 0), (2, 0)]
    para = [verdict(0, False, 1, "paralinguistic"), verdict(1, False, 2, "paralinguistic"),
            verdict(2, True, 3, "paralinguistic")]  # fmt: skip
    assert [(a["iteration"], b["iteration"]) for a, b in judge_pairs(para)] == [(2, 0)]
    failed = dict(verdict(1, True), status="failed")
    assert judge_pairs([verdict(0, False), failed]) == []
    ratings = [{"iteration": 0, "rating": 1}, {"iteration": 1, "rating": 4},
               {"iteration": 2, "rating": 5}]  # fmt: skip
    # a margin over 3: only 5 against 1
    assert [(a["iteration"], b["iteration"]) for a, b in rating_pairs(ratings)] == [(2, 0)]


def _sha(run: Path, clip: str, iteration: int) -> str:
    return _records(run)[(clip, iteration)]["output_sha256"]


def test_a_ratings_file_round_trip_json_and_csv(judged_run, tmp_path, capsys):
    entries = [
        {"run_id": "r", "clip_id": "c0", "row_index": 0, "iteration": 2, "rating": 5,
         "audio_sha256": _sha(judged_run, "c0", 2), "rater": "ana"},
        {"run_id": "r", "clip_id": "c0", "row_index": 0, "iteration": 0, "rating": 1,
         "rater": "ana"},
        {"run_id": "r", "clip_id": "c0", "row_index": 0, "iteration": 1, "rating": 3,
         "rater": "ana"},
        {"run_id": "r", "clip_id": "c1", "iteration": 1, "rating": 6, "rater": "ana"},
        {"run_id": "r", "clip_id": "nope", "iteration": 1, "rating": 2},
        {"run_id": "r", "clip_id": "c1", "iteration": 2, "rating": 2,
         "audio_sha256": _sha(judged_run, "c1", 1)},
    ]  # fmt: skip
    file = tmp_path / "ratings-r.json"
    file.write_text(json.dumps(entries))
    run_arg = str(judged_run)
    assert main(["dataset", "import-ratings", run_arg, str(file)]) == 1  # some rejected
    captured = capsys.readouterr()
    assert "imported 3 ratings" in captured.out
    assert "entry 4 (c1): field 'rating' is 6, expected a whole number 1-5" in captured.err
    assert "entry 5: field 'clip_id' is 'nope'" in captured.err
    assert "entry 6 (c1): field 'audio_sha256'" in captured.err
    again = import_ratings(str(judged_run.parent), "r", file.read_bytes(), str(file))
    assert again.already and again.imported == 3  # the same file: nothing written twice

    csv_file = tmp_path / "ratings-r.csv"
    csv_file.write_text(
        "run_id,clip_id,row_index,iteration,rating,audio_sha256,rater,rated_at\n"
        f"r,c1,1,2,5,{_sha(judged_run, 'c1', 2)},ben,2026-01-01T00:00:00Z\n"
        "r,c1,1,0,1,,ben,2026-01-01T00:00:01Z\n"
    )
    assert main(["dataset", "import-ratings", run_arg, str(csv_file)]) == 0
    report = verify_run(str(judged_run.parent), "r")
    assert report.intact and report.checked["ratings"] == 5
    history = clip_history(str(judged_run.parent), "r", "c1")
    assert history["intact"] and [r["rating"] for r in history["ratings"]] == [1, 5]
    assert "rating   iteration 2  5/5 by ben at 2026-01-01T00:00:00Z" in format_history(history)

    dest = tmp_path / "prefs"
    assert main(["dataset", "preferences", run_arg, "--out", str(dest)]) == 0
    assert "rating ana: 1, rating ben: 1" in capsys.readouterr().out
    rated = [
        r for r in pq.read_table(dest / "preferences.parquet").to_pylist()
        if r["preference_source"] == "rating"
    ]  # fmt: skip
    assert sorted((r["clip_id"], r["rater"], r["chosen_iteration"], r["rejected_iteration"],
                   r["chosen_score"], r["rejected_score"]) for r in rated) == [
        ("c0", "ana", 2, 0, 5, 1), ("c1", "ben", 2, 0, 5, 1)]  # fmt: skip

    # a rating changed after the import breaks its seal
    (part,) = [p for p in (judged_run / "ratings").glob("*.parquet") if "ben" in str(
        pq.read_table(p).column("rater").to_pylist())]  # fmt: skip
    table = pq.read_table(part)
    changed = table.to_pylist()
    changed[0]["rating"] = 4
    pq.write_table(type(table).from_pylist(changed, table.schema), part)
    kinds = {m.kind for m in verify_run(str(judged_run.parent), "r").mismatches}
    assert kinds == {"rating_altered"}
    pq.write_table(table.slice(0, 1), part)  # a rating dropped from an imported file
    kinds = {m.kind for m in verify_run(str(judged_run.parent), "r").mismatches}
    assert kinds == {"ratings_altered"}
    part.unlink()  # and the whole file
    kinds = {m.kind for m in verify_run(str(judged_run.parent), "r").mismatches}
    assert kinds == {"ratings_missing"}


def test_preference_pairs_written_to_s3(judged_run, s3):
    summary = build_preferences(str(judged_run.parent), "r", "s3://runs/prefs-s3")
    assert summary["preferences"] == "s3://runs/prefs-s3/preferences.parquet"
    with s3.open("runs/prefs-s3/preferences.parquet", "rb") as handle:
        rows = pq.read_table(handle).to_pylist()
    judged = [r for r in rows if r["preference_source"] == "judge"]
    assert len(judged) == 4
    for r in judged:
        assert r["chosen_uri"].startswith("s3://runs/prefs-s3/audio/")
        assert r["chosen_sha256"] == sha256_bytes(s3.cat(r["chosen_uri"]))
    assert s3.exists("runs/prefs-s3/README.md")


def test_a_file_that_is_not_ratings_is_refused(judged_run, tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(RunRefused, match="expected JSON or CSV"):
        import_ratings(str(judged_run.parent), "r", bad.read_bytes(), str(bad))
    with pytest.raises(RunRefused, match="no run.json"):
        build_preferences(str(tmp_path), "missing", str(tmp_path / "p"))


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny stand-in tensors: threads only add contention
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("edit", ["denoise", "clone;denoise"])
def test_token_columns_are_the_model_chat_with_its_audio_tokens(edit, tmp_path, one_torch_thread):
    from stepedit_core.engines.stepaudio.prompts import EDIT_SYSTEM_PROMPT, edit_conversation
    from stepedit_core.engines.stepaudio.tokens import from_text, to_text

    from stepaudio_standins import shared_standins

    models, src = shared_standins()
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"clip_id": "a", "audio_uri": write_clip(tmp_path / "a.wav", 1.2), "text": "hello",
          "target_text": "hello there"}],
    )  # fmt: skip
    job = JobSpec(manifest_uri=manifest, out=str(tmp_path / "runs"), run_id="m",
                  edits=parse_chain(edit), iterations=2, engine="step-audio-editx",
                  models_dir=str(models), stepaudio_src=str(src), executor="local")  # fmt: skip
    run_inprocess(job)
    run = tmp_path / "runs" / "m"
    records = _records(run)
    first, second = records[("a", 1)], records[("a", 2)]
    assert first["status"] == second["status"] == "ok", first["error"] or second["error"]
    assert (("a", 0) in records) == edit.startswith("clone")  # iteration 0: the clone's record
    ratings = [{"clip_id": "a", "iteration": 2, "rating": 5},
               {"clip_id": "a", "iteration": 0, "rating": 1},
               {"clip_id": "a", "iteration": 1, "rating": 1}]  # fmt: skip
    file = tmp_path / "ratings.json"
    file.write_text(json.dumps({"ratings": ratings}))
    assert import_ratings(str(run.parent), "m", file.read_bytes(), str(file)).imported == 3
    build_preferences(str(run.parent), "m", str(tmp_path / "prefs"))
    rows = {
        (r["chosen_iteration"], r["rejected_iteration"]): r
        for r in pq.read_table(tmp_path / "prefs" / "preferences.parquet").to_pylist()
    }
    assert set(rows) == {(2, 0), (2, 1)}
    # the prompt is the clip's first editing request, exactly as the engine framed it
    prompt = edit_conversation(first["instruction"], to_text(first["input_tokens"]))
    assert prompt[0] == {"role": "system", "content": EDIT_SYSTEM_PROMPT}
    assert prompt[1]["content"].startswith(first["instruction"] + "\n<audio_")
    for pair in rows.values():
        assert pair["prompt"] == prompt
        assert pair["chosen"] == [
            {"role": "assistant", "content": to_text(second["output_tokens"])}
        ]
    # iteration 0 answers with the clip's audio as the request carried it; round 1 with its own
    assert from_text(rows[(2, 0)]["rejected"][0]["content"]) == first["input_tokens"]
    assert from_text(rows[(2, 1)]["rejected"][0]["content"]) == first["output_tokens"]
    # iteration 0's audio: the clone's own FLAC, written into the set; or the source file
    zero = rows[(2, 0)]
    assert zero["rejected_sha256"] == sha256_bytes(Path(zero["rejected_uri"]).read_bytes())
    if ("a", 0) in records:
        assert zero["rejected_round_sha256"] == records[("a", 0)]["record_sha256"]
        assert zero["rejected_uri"].startswith(str(tmp_path / "prefs" / "audio"))
    else:
        assert zero["rejected_uri"] == str(tmp_path / "a.wav")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium/chromedriver not installed (.ci/run installs them with apt-get)",
)
def test_rating_rounds_on_the_review_page_and_importing_the_download(judged_run, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from stepedit_core.report import build_report

    run = tmp_path / "runs" / "r"
    shutil.copytree(judged_run, run)
    shutil.rmtree(run / "ratings", ignore_errors=True)
    build_report(str(run.parent), "r")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1600",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    page = (run / "report" / "index.html").as_uri()

    def ready(d) -> bool:
        bar = d.find_element(By.ID, "ratings-bar")
        return bar.get_attribute("data-ready") == "1"

    def widget(clip: str, iteration: int):
        return driver.find_element(
            By.CSS_SELECTOR, f'div.rating[data-clip="{clip}"][data-iteration="{iteration}"]'
        )

    def downloaded(name: str) -> Path:
        path = downloads / name
        WebDriverWait(driver, 20).until(
            lambda d: path.exists() and not list(downloads.glob("*.crdownload"))
        )
        return path

    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
        driver.get(page)
        WebDriverWait(driver, 20).until(ready)
        # the source and both rounds of each clip can be rated
        assert len(driver.find_elements(By.CSS_SELECTOR, "div.rating")) == 6
        driver.find_element(By.ID, "ratings-rater").send_keys("ana\n")
        widget("c0", 2).find_element(By.CSS_SELECTOR, 'button[data-rating="5"]').click()
        widget("c0", 0).find_element(By.CSS_SELECTOR, 'button[data-rating="2"]').click()
        widget("c0", 0).find_element(By.CSS_SELECTOR, 'button[data-rating="1"]').click()  # changed
        assert driver.find_element(By.ID, "ratings-count").text == "2 rounds rated"
        driver.get(page)  # kept in the browser across visits
        WebDriverWait(driver, 20).until(ready)
        chosen = widget("c0", 0).find_element(By.CSS_SELECTOR, "button.chosen")
        assert chosen.get_attribute("data-rating") == "1"
        driver.find_element(By.ID, "ratings-export-json").click()
        exported = downloaded("ratings-r.json")
        driver.find_element(By.ID, "ratings-export-csv").click()
        exported_csv = downloaded("ratings-r.csv")
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()
    entries = json.loads(exported.read_text())["ratings"]
    assert {(e["clip_id"], e["iteration"], e["rating"], e["rater"]) for e in entries} == {
        ("c0", 2, 5, "ana"), ("c0", 0, 1, "ana")}  # fmt: skip
    assert exported_csv.read_text().startswith("run_id,clip_id,row_index,iteration,rating")
    outcome = import_ratings(str(run.parent), "r", exported.read_bytes(), str(exported))
    assert outcome.imported == 2 and not outcome.rejected
    assert verify_run(str(run.parent), "r").intact
    build_preferences(str(run.parent), "r", str(tmp_path / "prefs"))
    rated = [
        r for r in pq.read_table(tmp_path / "prefs" / "preferences.parquet").to_pylist()
        if r["preference_source"] == "rating"
    ]  # fmt: skip
    assert [(r["clip_id"], r["chosen_iteration"], r["rejected_iteration"]) for r in rated] == [
        ("c0", 2, 0)]  # fmt: skip
