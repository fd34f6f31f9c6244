"""`stepedit eval import-benchmark`: a Step-Audio-Edit-Benchmark checkout as a manifest, built
here as a small checkout with the release's layout (data/*.jsonl, prompt_audios/)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from stepedit_core.catalog.access import AllowedRoots
from stepedit_core.catalog.manifest import check_schema
from stepedit_core.catalog.records import RowResult
from stepedit_core.engines import make_engine
from stepedit_core.evaluation.benchmark import (
    BenchmarkError,
    import_benchmark,
    read_benchmark,
)
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.lifecycle.planning import check_rows
from stepedit_flows.cli import main

SPEAKERS = {"167": "prompt_audios/167.wav", "X01_S0": "prompt_audios/X01_S0.wav"}
PROMPT_TEXT = {"167": "With regards to children.", "X01_S0": "为什么不要随便把父母接到身边。"}
LANG = {"167": "en", "X01_S0": "zh"}


def _line(task: str, label: str, speaker: str, gen_text: str, row_id: str, **extra) -> dict:
    line = {
        "id": row_id,
        "speaker": speaker,
        "gen_text": gen_text,
        "prompt_audio": SPEAKERS[speaker],
        "prompt_text": PROMPT_TEXT[speaker],
        "lang": LANG[speaker],
        "task": task,
        "task_sub": label,
    }
    line.update(extra)
    return line


EMOTION = [
    _line("emotion", "happy", "X01_S0", "三年没见，你终于回国了！", "happy-X01_S0-0"),
    _line("emotion", "fear", "167", "Did you hear that?  Someone is outside.", "fear-167-0"),
]
STYLE = [  # the release's style ids are not unique
    _line("style", "act_coy", "167", "Pretty please, just one more?", "act_coy-167-idx"),
    _line("style", "act_coy", "167", "Can I have it, pleeease?", "act_coy-167-idx"),
    _line("style", "whisper", "X01_S0", "小声点，他们在睡觉。", "whisper-X01_S0-idx"),
]
PARA = [  # spelt `paralingustic` in the release, file name and task field alike
    _line(
        "paralingustic",
        "[Breathing]",
        "X01_S0",
        "今天可真累啊 [Breathing]。",
        "[Breathing]-X01_S0-002",
    ),
    _line("paralingustic", "[Laughter]", "167", "[Laughter] That was great!", "[Laughter]-167-000"),
]


def _write_jsonl(path: Path, lines: list, trailing_blank: bool = True) -> None:
    text = "\n".join(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False) for x in lines)
    path.write_text(text + ("\n" if trailing_blank else ""), encoding="utf-8")


def make_checkout(root: Path, emotion=EMOTION, style=STYLE, para=PARA) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "prompt_audios").mkdir()
    for relative in SPEAKERS.values():
        sf.write(root / relative, np.zeros(1600, dtype=np.float32), 16000)
    _write_jsonl(root / "data" / "emotion.jsonl", emotion)
    _write_jsonl(root / "data" / "style.jsonl", style)
    _write_jsonl(root / "data" / "paralingustic.jsonl", para)
    return root


@pytest.fixture
def checkout(tmp_path) -> Path:
    return make_checkout(tmp_path / "Step-Audio-Edit-Benchmark")


def test_one_row_per_line_with_the_manifest_columns(checkout, tmp_path):
    out = tmp_path / "m" / "bench.parquet"
    imported = import_benchmark(checkout, str(out))
    table = pq.read_table(out)
    check_schema(table.schema, str(out))  # a manifest stepedit accepts as is
    rows = table.to_pylist()
    assert len(rows) == len(EMOTION) + len(STYLE) + len(PARA) == len(imported.rows)
    assert imported.counts() == {"emotion": 2, "style": 3, "paralinguistic": 2}
    assert [r["clip_id"] for r in rows] == [
        "emotion-00001",
        "emotion-00002",
        "style-00001",
        "style-00002",
        "style-00003",
        "paralinguistic-00001",
        "paralinguistic-00002",
    ]
    assert [r["benchmark_id"] for r in rows[2:4]] == ["act_coy-167-idx", "act_coy-167-idx"]
    fear = rows[1]
    assert fear == {
        "clip_id": "emotion-00002",
        "audio_uri": str((checkout / "prompt_audios" / "167.wav").resolve()),
        "text": "With regards to children.",
        "target_text": "Did you hear that?  Someone is outside.",  # as given, both spaces
        "language": "en",
        "speaker": "167",
        "eval_task": "emotion",
        "eval_label": "fear",
        "benchmark_id": "fear-167-0",
        "benchmark_source": "data/emotion.jsonl:2",
    }
    breathing = rows[5]
    assert breathing["eval_task"] == "paralinguistic"  # not the release's `paralingustic`
    assert breathing["eval_label"] == "[Breathing]"
    assert breathing["target_text"] == "今天可真累啊 [Breathing]。"  # tags kept for judging
    assert breathing["benchmark_source"] == "data/paralingustic.jsonl:1"
    assert breathing["language"] == "zh" and breathing["speaker"] == "X01_S0"


def test_imported_rows_plan_as_clones_from_the_speakers_prompt(checkout, tmp_path):
    out = tmp_path / "bench.parquet"
    import_benchmark(checkout, str(out))
    engine = make_engine("step-audio-editx")
    roots = AllowedRoots([str(checkout)])
    planned = list(check_rows(str(out), parse_chain("clone"), engine, 0, roots))
    refused = [p.error for p in planned if isinstance(p, RowResult)]
    assert refused == [] and len(planned) == 7


def test_mints_the_same_ids_on_every_import_and_keeps_subsets_balanced(checkout):
    first = [r["clip_id"] for r in read_benchmark(checkout).rows]
    assert first == [r["clip_id"] for r in read_benchmark(checkout).rows]
    one = read_benchmark(checkout, tasks=("style",), per_label=1).rows
    # one line per (task, language, speaker, label): the second act_coy line of 167 goes
    assert [(r["eval_label"], r["speaker"]) for r in one] == [
        ("act_coy", "167"),
        ("whisper", "X01_S0"),
    ]


def test_accepts_the_data_folder_and_the_corrected_file_name(tmp_path):
    root = make_checkout(tmp_path / "b")
    (root / "data" / "paralingustic.jsonl").rename(root / "data" / "paralinguistic.jsonl")
    assert read_benchmark(root).counts()["paralinguistic"] == 2
    with pytest.raises(BenchmarkError, match="has no emotion file: looked for data/emotion.jsonl"):
        read_benchmark(tmp_path)


BAD_LINES = [
    ("{not json", "line 2: not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object with fields id, speaker"),
    (
        {k: v for k, v in EMOTION[0].items() if k != "gen_text"},
        "line 2: field 'gen_text' is missing; expected the line to speak",
    ),
    (dict(EMOTION[0], prompt_text="  "), "line 2: field 'prompt_text' is '  '; expected the"),
    (dict(EMOTION[0], task="style"), "line 2: field 'task' is 'style'; expected 'emotion'"),
    (dict(EMOTION[0], task_sub="joyful"), "line 2: field 'task_sub' is 'joyful'; expected one"),
    (
        dict(EMOTION[0], prompt_audio="../outside.wav"),
        "line 2: field 'prompt_audio' is '../outside.wav'; expected a path inside the checkout",
    ),
    (
        dict(EMOTION[0], prompt_audio="prompt_audios/missing.wav"),
        "line 2: field 'prompt_audio' is 'prompt_audios/missing.wav'; no such file",
    ),
]


@pytest.mark.parametrize(("bad", "needle"), BAD_LINES, ids=lambda x: str(x)[:30])
def test_a_bad_line_is_named_by_file_line_and_field_and_nothing_is_written(tmp_path, bad, needle):
    root = make_checkout(tmp_path / "b", emotion=[EMOTION[0], bad, EMOTION[1]])
    out = tmp_path / "bench.parquet"
    with pytest.raises(BenchmarkError) as refused:
        import_benchmark(root, str(out))
    assert f"data/emotion.jsonl {needle}" in str(refused.value)
    assert "1 unusable line(s)" in str(refused.value) and not out.exists()
    kept = import_benchmark(root, str(out), skip_bad_lines=True)
    # the good lines keep their ids: the third line is still emotion-00003
    ids = [r["clip_id"] for r in pq.read_table(out).to_pylist()][:2]
    assert ids == ["emotion-00001", "emotion-00003"]
    assert len(kept.problems) == 1


def test_a_paralinguistic_line_must_hold_its_tag(tmp_path):
    bad = dict(PARA[1], gen_text="That was great!")
    root = make_checkout(tmp_path / "b", para=[PARA[0], bad])
    problems = read_benchmark(root).problems
    assert problems == [
        "data/paralingustic.jsonl line 2: field 'gen_text' does not hold the tag [Laughter] "
        "that field 'task_sub' names"
    ]


def test_cli_imports_and_says_how_to_run(checkout, tmp_path, capsys):
    out = tmp_path / "elsewhere" / "bench.parquet"
    code = main(["eval", "import-benchmark", str(checkout), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and out.exists()
    assert "7 row(s) (emotion 2, style 3, paralinguistic 2)" in printed
    assert f"--allow-root {checkout}" in printed  # the clips are outside the manifest's folder
    inside = checkout / "bench.parquet"
    code = main(
        ["eval", "import-benchmark", str(checkout), "--out", str(inside), "--tasks", "style"]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "3 row(s) (style 3)" in printed and "--allow-root" not in printed


def test_cli_refuses_bad_lines_with_exit_2(tmp_path, capsys):
    root = make_checkout(tmp_path / "b", style=[STYLE[0], "{oops"])
    code = main(["eval", "import-benchmark", str(root), "--out", str(tmp_path / "m.parquet")])
    err = capsys.readouterr().err
    assert code == 2
    assert "data/style.jsonl line 2: not valid JSON" in err and "--skip-bad-lines" in err
    code = main(
        ["eval", "import-benchmark", str(root), "--out", str(tmp_path / "m.parquet"),
         "--skip-bad-lines"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "skipped data/style.jsonl line 2" in out and "5 row(s)" in out


def test_cli_refuses_a_per_label_below_one(checkout, tmp_path, capsys):
    argv = ["eval", "import-benchmark", str(checkout), "--out", str(tmp_path / "m.parquet")]
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--per-label", "0"])
    assert stopped.value.code == 2
    assert "--per-label: expected a whole number of at least 1, got '0'" in capsys.readouterr().err
