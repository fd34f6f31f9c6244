"""The judge margin scorer: both recordings of a pair sent to the test judge server (both APIs,
the key in its header), answers read and cached, failures left unscored, and a margin set
scored by a judge."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf
from judge_server import KEY, JudgeServer

from stepedit_core.dataset import MarginSpec, build_margin_set
from stepedit_core.dataset.judge_scorer import JudgeScorer, read_margin
from stepedit_core.dataset.scorers import Pair, ScorerUnavailable
from stepedit_core.executors.local import LocalExecutor
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import parse_edit
from stepedit_core.judges.http import HttpPolicy
from stepedit_core.judges.spec import JudgeSpec
from stepedit_flows.cli import main

from conftest import tone, write_clip, write_manifest

FAST = HttpPolicy(timeout_s=10, attempts=3, backoff_s=0.01, max_backoff_s=0.05)


def _seconds(wav: bytes) -> float:
    audio, rate = sf.read(io.BytesIO(wav))
    return len(audio) / rate


def by_duration(prompt: str, wavs: list[bytes]) -> str:
    """Hears how much shorter the second recording is: 9 at 0.8x or less, else 2."""
    neutral, edited = (_seconds(w) for w in wavs)
    return f'Here you go: {{"margin": {9 if edited <= 0.85 * neutral else 2}}}'


@pytest.fixture()
def server():
    srv = JudgeServer(rule_all=by_duration)
    srv.url = srv.start()
    yield srv
    srv.stop()


@pytest.fixture()
def key_env(monkeypatch):
    monkeypatch.setenv("MARGIN_TEST_KEY", KEY)
    return "MARGIN_TEST_KEY"


def _audio(seconds: float) -> Audio:
    return Audio(tone(seconds, 16000), 16000)


def _scorer(server, key_env, api: str, tmp_path: Path, template: str | None = None):
    endpoint = server.url + ("/v1" if api == "openai" else "")
    spec = JudgeSpec(kind=api, endpoint=endpoint, model="judge-m", key_env=key_env)
    scorer = JudgeScorer(
        spec, str(tmp_path / "out"), **({"template": template} if template else {})
    )
    scorer._client.policy = FAST
    return scorer


@pytest.mark.parametrize("api", ["gemini", "openai"])
def test_the_judge_hears_both_versions_and_its_answer_is_cached(server, key_env, tmp_path, api):
    server.fail_first, server.retry_after = [503], "0"
    scorer = _scorer(server, key_env, api, tmp_path)
    attribute = parse_edit("emotion=happy")
    faster = Pair(attribute, _audio(1.0), _audio(0.7))
    same = Pair(attribute, _audio(1.0), _audio(1.0))
    margin = scorer.score(faster)
    assert (margin.value, margin.basis, margin.note) == (9, "judge_margin", None)
    assert scorer.score(same).value == 2
    answered = [r for r in server.requests if r["status"] == 200]
    assert [r["audio_parts"] for r in answered] == [2, 2]
    assert "edited for emotion=happy" in answered[0]["prompt"]
    assert "the emotion the voice expresses" in answered[0]["prompt"]
    header = "x-goog-api-key" if api == "gemini" else "authorization"
    assert KEY in {k.lower(): v for k, v in answered[0]["headers"].items()}[header]
    again = scorer.score(faster)  # the same pair, prompt and model: from the cache
    assert again.value == 9 and again.measures["judge_cached"] == 1.0
    assert len(server.requests) == 3


def test_unreadable_or_failed_answers_leave_the_pair_unscored(server, key_env, tmp_path):
    scorer = _scorer(server, key_env, "gemini", tmp_path, template="Rate {attribute}: {what}")
    pair = Pair(parse_edit("speed=faster"), _audio(1.0), _audio(0.7))
    server.rule_all = lambda prompt, wavs: "somewhere between 3 and 7"
    margin = scorer.score(pair)
    assert margin.value is None and margin.note.startswith("judge_unparsable")
    assert server.requests[-1]["prompt"] == "Rate speed=faster: speaking speed"
    server.fail_first = [403] * 10
    other = Pair(parse_edit("speed=faster"), _audio(1.0), _audio(0.6))
    failed = scorer.score(other)
    assert failed.value is None and "HTTP 403" in failed.note and KEY not in failed.note


def test_margins_are_read_from_json_or_a_lone_number():
    assert read_margin('```json\n{"margin": 7}\n```') == 7
    assert read_margin("10") == 10
    with pytest.raises(ValueError):
        read_margin('{"margin": 11}')
    with pytest.raises(ValueError):
        read_margin("maybe 4, maybe 6")


def test_a_missing_key_is_refused_before_any_work(server, monkeypatch, tmp_path):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    spec = JudgeSpec(kind="gemini", endpoint=server.url, model="m", key_env="NOT_SET_KEY")
    with pytest.raises(ScorerUnavailable, match="NOT_SET_KEY"):
        JudgeScorer(spec, str(tmp_path))


def test_a_margin_set_scored_by_the_judge(server, key_env, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"clip_id": f"c{i}", "audio_uri": write_clip(clips / f"{i}.wav", 1.0, seed=i)}
         for i in range(2)],
    )  # fmt: skip
    judge = JudgeSpec(kind="openai", endpoint=server.url + "/v1", model="judge-m", key_env=key_env)
    spec = MarginSpec.create(
        manifest, ["speed=faster", "speed=slower"], str(tmp_path / "out"), "set", scorer="judge",
        judge=judge, executor="local", report="none",
    )  # fmt: skip
    summary = build_margin_set(spec, executor=LocalExecutor())
    rows = pq.read_table(tmp_path / "out" / "set" / "dataset" / "sft.parquet").to_pylist()
    margins = {(r["clip_id"], r["attribute"]): (r["margin"], r["kept"]) for r in rows}
    assert margins == {
        ("c0", "speed=faster"): (9, True), ("c1", "speed=faster"): (9, True),
        ("c0", "speed=slower"): (2, False), ("c1", "speed=slower"): (2, False),
    }  # fmt: skip
    assert {r["margin_scorer"] for r in rows} == {"judge"}
    assert summary["scorer"] == "judge (openai judge-m)"
    card = (tmp_path / "out" / "set" / "dataset" / "README.md").read_text()
    assert "`openai` judge (model `judge-m`)" in card and "{attribute}" in card
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    footer = json.loads(
        pq.read_schema(tmp_path / "out" / "set" / "dataset" / "sft.parquet").metadata[
            b"stepedit_margin_set"
        ]
    )
    assert footer["judge"] == ["openai", "judge-m"]


def test_cli_margin_judge_options_are_checked(tmp_path, capsys, monkeypatch):
    manifest = write_manifest(
        tmp_path / "m.parquet", [{"clip_id": "a", "audio_uri": write_clip(tmp_path / "a.wav")}]
    )
    base = ["dataset", "margin", manifest, "--out", str(tmp_path / "o"), "--run-id", "x",
            "--attribute", "emotion=happy"]  # fmt: skip
    assert main([*base, "--judge", "gemini"]) == 2
    assert "needs --model" in capsys.readouterr().err
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    assert main([*base, "--judge", "gemini", "--model", "m", "--key-env", "NO_SUCH_KEY"]) == 2
    assert "NO_SUCH_KEY is not set" in capsys.readouterr().err
    assert main([*base, "--model", "m"]) == 2
    assert "--model: only with --judge" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # objective measurements score no margins
        main([*base, "--judge", "objective"])
    assert refused.value.code == 2
    offered = capsys.readouterr().err.split("invalid choice: 'objective' (choose from")[1]
    assert "gemini" in offered and "openai" in offered and "objective" not in offered
    bad = tmp_path / "p.txt"
    bad.write_text("How {different}?")
    assert main([*base, "--judge", "openai", "--endpoint", "http://x/v1", "--model", "m",
                 "--margin-prompt", str(bad)]) == 2  # fmt: skip
    assert "bad placeholder" in capsys.readouterr().err
    assert not (tmp_path / "o" / "x" / "run.json").exists()
