"""Judges: answers parsed without guessing, both APIs through a flaky server that checks the key,
the verdict cache, judging a finished run exactly once, and rounds that stop when the judge
agrees."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from judge_server import KEY, JudgeServer

from stepedit_core.audit import clip_history, format_history, verify_run
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.edits import parse_edit
from stepedit_core.judges.answers import Unparsable, grade
from stepedit_core.judges.http import HttpPolicy, JudgeClient, JudgeRequestFailed
from stepedit_core.judges.judge import Judge, JudgeTask, wav16
from stepedit_core.judges.judging import judge_run
from stepedit_core.judges.prompts import Prompts, checklist
from stepedit_core.judges.spec import JudgeSpec
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.cli import main

from conftest import run_inprocess, write_clip, write_manifest

FAST = HttpPolicy(timeout_s=10, attempts=4, backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture()
def server():
    srv = JudgeServer()
    url = srv.start()
    srv.url = url
    yield srv
    srv.stop()


@pytest.fixture()
def key_env(monkeypatch):
    monkeypatch.setenv("STEPEDIT_TEST_JUDGE_KEY", KEY)
    return "STEPEDIT_TEST_JUDGE_KEY"


def _wav(tmp_path: Path, seconds: float) -> bytes:
    return Path(write_clip(tmp_path / f"c{seconds}.wav", seconds=seconds)).read_bytes()


# ------------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("text", "answer", "correct", "out"),
    [
        ('```json\n{"emotion": "happy"}\n```', "happy", True, False),
        ('Sure! Here is my answer: {"emotion": "Sad"} hope it helps', "sad", False, False),
        ("happy", "happy", True, False),
        ('{"emotion": "act_cute"}', "act_cute", False, True),
    ],
)
def test_emotion_answers_are_read_and_out_of_label_answers_counted_wrong(
    text, answer, correct, out
):
    graded = grade(text, "emotion", "happy")
    assert (graded.answer, graded.correct, graded.out_of_label) == (answer, correct, out)


def test_style_normal_is_a_wrong_answer_inside_the_label_set():
    graded = grade('{"style": "normal"}', "style", "whisper")
    assert (graded.correct, graded.out_of_label) == (False, False)


def test_paralinguistic_scores_and_unparsable_answers():
    assert grade("Score: 3", "paralinguistic", "[Laughter]").score == 3
    assert grade("2", "paralinguistic", "[Laughter]").correct is False
    with pytest.raises(Unparsable):
        grade("I can not tell, maybe 2 or 3", "paralinguistic", "[Laughter]")
    with pytest.raises(Unparsable):
        grade("The speaker sounds rather pleased with the outcome, I think.", "emotion", "happy")


def test_checklist_anchors_each_tag_on_the_characters_before_it():
    lines = checklist("[Sigh]Well, I did it [Laughter] again.").splitlines()
    assert lines[0].startswith("- at the very start") and "sigh" in lines[0]
    assert "'id it'" in lines[1] and "laughter" in lines[1]


def test_prompts_file_overrides_one_task_and_rejects_unknown_tasks(tmp_path):
    good = tmp_path / "p.json"
    good.write_text(json.dumps({"emotion": "Which of {labels}? JSON please."}))
    prompts = Prompts.load(str(good))
    assert prompts.render("emotion").startswith("Which of natural, happy")
    assert prompts.templates["style"] == Prompts().templates["style"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"emotions": "x"}))
    with pytest.raises(ValueError, match="emotions"):
        Prompts.load(str(bad))


# ------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("api", ["gemini", "openai"])
def test_both_apis_retry_429_and_503_and_honour_retry_after(server, key_env, tmp_path, api):
    server.fail_first, server.retry_after = [429, 503], "7"
    waits: list[float] = []
    endpoint = server.url + ("/v1" if api == "openai" else "")
    client = JudgeClient(api, endpoint, "judge-model", key_env, FAST, sleep=waits.append)
    answer = client.ask(Prompts().render("emotion"), wav16(_wav(tmp_path, 0.5)))
    assert json.loads(answer.strip("`json\n")) == {"emotion": "happy"}
    assert [r["status"] for r in server.requests] == [429, 503, 200]
    assert waits[0] >= 7.0 and waits[1] < 1.0  # Retry-After obeyed, then plain backoff
    sent = server.requests[-1]
    assert KEY not in sent["path"]
    header = "x-goog-api-key" if api == "gemini" else "authorization"
    assert KEY in {k.lower(): v for k, v in sent["headers"].items()}[header]


def test_a_wrong_key_fails_without_retrying_and_the_message_hides_the_key(
    server, monkeypatch, tmp_path
):
    monkeypatch.setenv("WRONG_KEY", "not-the-key-123")
    client = JudgeClient("gemini", server.url, "m", "WRONG_KEY", FAST, sleep=lambda s: None)
    with pytest.raises(JudgeRequestFailed, match="HTTP 403") as info:
        client.ask("p", wav16(_wav(tmp_path, 0.5)))
    assert "not-the-key-123" not in str(info.value)
    assert len(server.requests) == 1


def test_verdicts_are_cached_and_unparsable_answers_get_their_own_code(server, key_env, tmp_path):
    judge = Judge("gemini", "m", server.url, key_env, str(tmp_path / "out"), 2, policy=FAST)
    data = _wav(tmp_path, 0.5)
    task = JudgeTask("a", 0, 1, "emotion", "happy", data, "sha-a", "rec-a")
    first, again = judge.judge(task), judge.judge(task)
    assert first.landed and not first.cached and again.cached and again.landed
    assert server.answered == 1
    assert first.prev_record_sha256 == "rec-a" and first.record_sha256
    server.rule = lambda task, prompt, wav: "It sounds cheerful to me."
    other = JudgeTask("b", 1, 1, "emotion", "happy", data, "sha-b", "rec-b")
    verdict = judge.judge(other)
    assert verdict.status == "failed" and verdict.error_code == "judge_unparsable"
    assert "cheerful" in verdict.raw_answer
    server.fail_first = [503] * 100
    failed = judge.judge(JudgeTask("c", 2, 1, "emotion", "happy", data, "sha-c", "rec-c"))
    assert failed.error_code == "judge_failed" and "503" in failed.error


# ------------------------------------------------------------------------- runs


def _catalog(tmp_path: Path) -> str:
    rows = [
        {"clip_id": f"c{i}", "audio_uri": write_clip(tmp_path / f"c{i}.wav", seconds=1.0, seed=i),
         "language": "en", "eval_task": "emotion", "eval_label": "happy"}
        for i in range(2)
    ]  # fmt: skip
    rows.append({"clip_id": "plain", "audio_uri": write_clip(tmp_path / "p.wav", seconds=1.0)})
    rows.append({"clip_id": "bad", "audio_uri": write_clip(tmp_path / "b.wav", seconds=1.0),
                 "eval_task": "emotions", "eval_label": "happy"})  # fmt: skip
    return write_manifest(tmp_path / "m.parquet", rows)


def _all_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in folder.rglob("*") if p.is_file()]


def test_judging_a_finished_run_writes_accuracy_once_and_verify_covers_verdicts(
    server, key_env, tmp_path
):
    # speed=faster: the source lasts 1.0 s (judged natural), rounds 0.8 and 0.64 s (happy)
    out = tmp_path / "runs"
    job = JobSpec(manifest_uri=_catalog(tmp_path), out=str(out), run_id="r",
                  edits=(parse_edit("speed=faster"),), iterations=2, executor="local")  # fmt: skip
    run_inprocess(job)
    server.fail_first = [429, 503]
    server.retry_after = "0"
    spec = JudgeSpec(kind="gemini", endpoint=server.url, model="judge-m", key_env=key_env)
    judge = spec.judge(str(out))
    judge.policy = FAST
    outcome = judge_run(str(out), "r", judge, LocalExecutor())
    assert outcome.verdicts == 6 and outcome.failed == 0 and outcome.skipped_rows
    assert "row 3: field 'eval_task' is 'emotions'" in outcome.skipped_rows[0]
    table = pq.read_table(out / "r" / "eval" / "accuracy.parquet").to_pylist()
    by_iteration = {row["iteration"]: row for row in table}
    assert by_iteration[0]["accuracy"] == 0.0 and by_iteration[1]["accuracy"] == 1.0
    assert by_iteration[2]["clips"] == 2 and by_iteration[2]["correct"] == 2
    assert (out / "r" / "eval" / "accuracy.md").read_text().count("| emotion | en |") >= 3
    asked = server.answered
    again = judge_run(str(out), "r", judge, LocalExecutor())
    assert server.answered == asked and again.parts_resumed >= 1 and again.verdicts == 6
    report = verify_run(str(out), "r")
    assert report.intact and report.checked["verdicts"] == 6
    # the key is in no file the run or the judge wrote
    for path, data in _all_bytes(out):
        assert KEY.encode() not in data, path


def test_verify_names_an_altered_verdict(server, key_env, tmp_path):
    out = tmp_path / "runs"
    job = JobSpec(manifest_uri=_catalog(tmp_path), out=str(out), run_id="r",
                  edits=(parse_edit("speed=faster"),), executor="local")  # fmt: skip
    run_inprocess(job)
    judge = JudgeSpec(kind="openai", endpoint=server.url + "/v1", model="m", key_env=key_env)
    judge_run(str(out), "r", judge.judge(str(out)), LocalExecutor())
    (part,) = (out / "r" / "judgements").glob("*.parquet")
    table = pq.read_table(part)
    rows = table.to_pylist()
    rows[0]["answer"] = "sad"
    pq.write_table(type(table).from_pylist(rows, table.schema), part)
    report = verify_run(str(out), "r")
    assert not report.intact
    assert any(m.kind == "verdict_altered" for m in report.mismatches)


def test_rounds_stop_when_the_judge_agrees_and_best_prefers_confirmed_rounds(
    server, key_env, tmp_path
):
    # happy below 0.9 s: round 1 (0.8 s) lands, so no round 2 or 3 is made
    out = tmp_path / "runs"
    spec = JudgeSpec(kind="gemini", endpoint=server.url, model="m", key_env=key_env)
    job = JobSpec(manifest_uri=_catalog(tmp_path), out=str(out), run_id="r",
                  edits=(parse_edit("speed=faster"),), iterations=3, executor="local",
                  judge=spec, until_judged=True, select="best")  # fmt: skip
    run_inprocess(job)
    rows = {r["clip_id"]: r for r in pq.read_table(out / "r" / "manifest.parquet").to_pylist()}
    assert rows["c0"]["iterations_done"] == 1 and rows["c0"]["selected_round"] == 1
    assert rows["c0"]["selection_reason"].startswith("judge confirmed")
    assert rows["plain"]["iterations_done"] == 3  # no target: never judged, never stopped
    verdicts = [v for p in (out / "r" / "judgements").glob("*.parquet")
                for v in pq.read_table(p).to_pylist()]  # fmt: skip
    assert {v["clip_id"] for v in verdicts} == {"c0", "c1"}
    assert all(v["stop_reason"].startswith("stopped after iteration 1") for v in verdicts)
    assert verify_run(str(out), "r").intact
    history = clip_history(str(out), "r", "c0")
    assert history["intact"] and history["verdicts"][0]["answer"] == "happy"
    assert "stopped after iteration 1" in format_history(history)
    for part in (out / "r" / "judgements").glob("*.parquet"):
        part.unlink()  # run.json's digest notices verdicts that are gone
    kinds = {m.kind for m in verify_run(str(out), "r").mismatches}
    assert kinds == {"verdicts_missing"}


def test_objective_judges_give_signal_edits_a_verdict(tmp_path):
    out = tmp_path / "runs"
    clip = write_clip(tmp_path / "a.wav", seconds=1.5)
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": clip}])
    job = JobSpec(manifest_uri=manifest, out=str(out), run_id="r",
                  edits=(parse_edit("speed=faster"), parse_edit("loudness=ebu")),
                  executor="local")  # fmt: skip
    run_inprocess(job)
    outcome = judge_run(str(out), "r", Judge("objective"), LocalExecutor())
    found = {row["task"]: row for row in outcome.accuracy}
    assert found["speed"]["correct"] == 1 and found["loudness"]["correct"] == 1


@pytest.mark.slow
def test_stepedit_judge_command_on_ray(server, key_env, tmp_path, ray_cluster, capsys):
    out = tmp_path / "runs"
    job = JobSpec(manifest_uri=_catalog(tmp_path), out=str(out), run_id="r",
                  edits=(parse_edit("speed=faster"),), executor="local")  # fmt: skip
    run_inprocess(job)
    args = ["judge", str(out / "r"), "--judge", "gemini", "--endpoint", server.url,
            "--model", "m", "--key-env", key_env, "--concurrency", "4"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| emotion | en | 1 | 2 | 100.0%" in printed
    page = (out / "r" / "report" / "index.html").read_text()
    assert "Judged accuracy" in page and 'class="paper"' in page and 'class="ours"' in page
    asked = server.answered
    assert main(args) == 0 and server.answered == asked


class _CrashAfter:
    """The local executor, except that its `calls`-th run raises (a judging pass that dies)."""

    name = "crash-after"

    def __init__(self, calls: int) -> None:
        self.calls, self.inner = calls, LocalExecutor()

    def run(self, stages, items):
        self.calls -= 1
        if self.calls < 0:
            raise RuntimeError("judging pass killed")
        yield from self.inner.run(stages, items)


def test_a_crashed_judging_pass_resumes_with_the_parts_not_written(
    server, key_env, tmp_path, monkeypatch
):
    out = tmp_path / "runs"
    job = JobSpec(manifest_uri=_catalog(tmp_path), out=str(out), run_id="r", shard_size=1,
                  edits=(parse_edit("speed=faster"),), executor="local")  # fmt: skip
    run_inprocess(job)
    monkeypatch.setattr("stepedit_core.judges.judging.PARTS_PER_CALL", 1)
    spec = JudgeSpec(kind="gemini", endpoint=server.url, model="m", key_env=key_env)
    with pytest.raises(RuntimeError, match="killed"):
        judge_run(str(out), "r", spec.judge(None), _CrashAfter(1))  # no cache: count requests
    first = server.answered
    assert len(list((out / "r" / "judgements").glob("*.parquet"))) == 1 and first == 2
    outcome = judge_run(str(out), "r", spec.judge(None), LocalExecutor())
    assert outcome.parts_resumed == 1 and outcome.verdicts == 4
    assert server.answered - first == 2  # only the clip whose part was not written
    assert verify_run(str(out), "r").intact


def test_objective_judge_stops_rounds_and_run_json_records_the_judge(tmp_path):
    clip = write_clip(tmp_path / "a.wav", seconds=1.5)
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": clip}])
    out = tmp_path / "runs"
    job = JobSpec(manifest_uri=manifest, out=str(out), run_id="j", iterations=3,
                  edits=(parse_edit("loudness=ebu"),), executor="local",
                  judge=JudgeSpec(kind="objective"), until_judged=True)  # fmt: skip
    run_inprocess(job)
    (row,) = pq.read_table(out / "j" / "manifest.parquet").to_pylist()
    assert row["status"] == "ok" and row["iterations_done"] == 1
    assert row["selection_reason"].startswith("stopped after iteration 1: the objective judge")
    (verdict,) = pq.read_table(out / "j" / "judgements").to_pylist()
    assert verdict["task"] == "loudness" and verdict["correct"]
    assert verdict["stop_reason"].startswith("stopped after iteration 1")
    run = json.loads((out / "j" / "run.json").read_text())
    assert run["parameters"]["judge"]["kind"] == "objective"
    assert run["parameters"]["until_judged"] is True and run["audit"]["verdicts"] == 1
    assert verify_run(str(out), "j").intact


@pytest.mark.slow
def test_run_judged_by_gemini_on_ray_keeps_the_key_out_of_every_file(
    server, key_env, tmp_path, prefect_server, ray_cluster
):
    out = tmp_path / "runs"
    args = ["run", _catalog(tmp_path), "--out", str(out), "--run-id", "g", "--edit",
            "speed=faster", "--iterations", "2", "--judge", "gemini", "--endpoint", server.url,
            "--model", "m", "--key-env", key_env, "--until-judged", "--select", "best",
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    rows = {r["clip_id"]: r for r in pq.read_table(out / "g" / "manifest.parquet").to_pylist()}
    assert rows["c1"]["iterations_done"] == 1 and rows["plain"]["iterations_done"] == 2
    assert rows["c1"]["selection_reason"].startswith("judge confirmed")
    for path, data in _all_bytes(out):
        assert KEY.encode() not in data, path


def test_retry_after_in_seconds_or_as_an_http_date():
    import email.utils
    import time

    from stepedit_core.judges.http import _retry_after

    assert _retry_after("3") == 3.0 and _retry_after(None) == 0.0 and _retry_after("x") == 0.0
    soon = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 <= _retry_after(soon) <= 20


def test_the_cache_spares_a_second_run_of_the_same_audio(server, key_env, tmp_path):
    out = tmp_path / "runs"
    manifest = _catalog(tmp_path)
    spec = JudgeSpec(kind="gemini", endpoint=server.url, model="m", key_env=key_env)
    for run_id in ("first", "second"):  # the signal engine makes the same bytes twice
        job = JobSpec(manifest_uri=manifest, out=str(out), run_id=run_id,
                      edits=(parse_edit("speed=faster"),), executor="local")  # fmt: skip
        run_inprocess(job)
        outcome = judge_run(str(out), run_id, spec.judge(str(out)), LocalExecutor())
    assert outcome.requests_saved == outcome.verdicts == 4
    assert server.answered == 4


def test_judge_command_refuses_a_run_without_targets_or_key(tmp_path, capsys, monkeypatch):
    clip = write_clip(tmp_path / "a.wav")
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": clip}])
    out = tmp_path / "runs"
    run_inprocess(JobSpec(manifest_uri=manifest, out=str(out), run_id="r",
                          edits=(parse_edit("speed=faster"),), executor="local"))  # fmt: skip
    base = ["judge", str(out / "r"), "--judge", "gemini", "--model", "m", "--executor", "local"]
    monkeypatch.delenv("NO_SUCH_JUDGE_KEY", raising=False)
    assert main([*base, "--key-env", "NO_SUCH_JUDGE_KEY"]) == 2
    assert "NO_SUCH_JUDGE_KEY is not set" in capsys.readouterr().err
    monkeypatch.setenv("SOME_KEY", "k")
    assert main([*base, "--key-env", "SOME_KEY", "--endpoint", "http://127.0.0.1:9"]) == 2
    assert "eval_task and eval_label" in capsys.readouterr().err


def test_paralinguistic_rounds_stop_at_the_top_score(server, key_env, tmp_path):
    clip = write_clip(tmp_path / "a.wav", seconds=1.0)
    manifest = write_manifest(tmp_path / "m.parquet", [
        {"clip_id": "p", "audio_uri": clip, "target_text": "Well [Laughter] fine.",
         "eval_task": "paralinguistic", "eval_label": "[Laughter]"}])  # fmt: skip
    out = tmp_path / "runs"
    spec = JudgeSpec(kind="openai", endpoint=server.url + "/v1", model="m", key_env=key_env)
    job = JobSpec(manifest_uri=manifest, out=str(out), run_id="r", iterations=3,
                  edits=(parse_edit("speed=faster"),), executor="local", judge=spec,
                  until_judged=True)  # fmt: skip
    run_inprocess(job)
    (row,) = pq.read_table(out / "r" / "manifest.parquet").to_pylist()
    (verdict,) = pq.read_table(out / "r" / "judgements").to_pylist()
    assert row["iterations_done"] == 1 and verdict["score"] == 3 and verdict["correct"]
    assert "- right after 'Well': laughter" in server.requests[-1]["prompt"]


def test_a_crash_between_verdicts_and_their_rounds_leaves_each_verdict_once(tmp_path, monkeypatch):
    from stepedit_core.foundation.store import RunStore

    clips = [write_clip(tmp_path / f"{n}.wav", seconds=1.5, seed=n) for n in range(2)]
    rows = [{"clip_id": f"c{n}", "audio_uri": c} for n, c in enumerate(clips)]
    manifest = write_manifest(tmp_path / "m.parquet", rows)
    out = tmp_path / "runs"
    job = JobSpec(manifest_uri=manifest, out=str(out), run_id="x", iterations=2,
                  edits=(parse_edit("loudness=ebu"),), executor="local",
                  judge=JudgeSpec(kind="objective"))  # fmt: skip
    real = RunStore.write_bytes

    def crash_on_rounds(self, path, data):
        if "/iterations/" in path:
            raise OSError("disk gone")  # the verdict part is written, its rounds are not
        return real(self, path, data)

    monkeypatch.setattr(RunStore, "write_bytes", crash_on_rounds)
    with pytest.raises(OSError, match="disk gone"):
        run_inprocess(job)
    assert list((out / "x" / "judgements").glob("*.parquet"))
    monkeypatch.setattr(RunStore, "write_bytes", real)
    run_inprocess(job)
    verdicts = pq.read_table(out / "x" / "judgements").to_pylist()
    assert sorted((v["clip_id"], v["iteration"]) for v in verdicts) == [
        ("c0", 1), ("c0", 2), ("c1", 1), ("c1", 2)
    ]  # fmt: skip
    assert verify_run(str(out), "x").intact


def test_a_model_judge_with_no_targets_refuses_the_run(tmp_path, server, key_env):
    from stepedit_core.foundation.failures import RunRefused

    clip = write_clip(tmp_path / "a.wav")
    manifest = write_manifest(tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": clip}])
    spec = JudgeSpec(kind="gemini", endpoint=server.url, model="m", key_env=key_env)
    job = JobSpec(manifest_uri=manifest, out=str(tmp_path / "o"), run_id="n",
                  edits=(parse_edit("speed=faster"),), executor="local", judge=spec)  # fmt: skip
    with pytest.raises(RunRefused, match="no row of .* has both eval_task and eval_label"):
        run_inprocess(job)
    assert not (tmp_path / "o" / "n" / "iterations").exists()
