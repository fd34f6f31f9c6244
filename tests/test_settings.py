"""Declared settings: every setting says whether it changes the output, the command line is
generated from the declarations, and the fingerprint and the incremental key follow them."""

from __future__ import annotations

import argparse
import json
import typing
from typing import Annotated, Literal

import pytest

from stepedit_core.engines import EngineOptions
from stepedit_core.engines.options import ENGINE_CONFIGS
from stepedit_core.foundation.settings import Setting, SettingsGroup, declared, output_settings
from stepedit_core.lifecycle.job import InputsConfig, JobSpec
from stepedit_flows.cli import build_parser
from stepedit_flows.run_options import job_from_args as _job
from stepedit_flows.setting_options import value_type

BASE = ["m.parquet", "--out", "o", "--run-id", "x"]
# a value other than the default for every flagged setting, as typed on the command line
OTHER = {
    "edits": ["--edit", "denoise", "--edit", "speed=faster"],
    "engine": ["--engine", "step-audio-editx"],
    "iterations": ["--iterations", "3"],
    "seed": ["--seed", "7"],
    "qc": ["--qc", "acx"],
    "qc_heavy": ["--qc-heavy"],
    "qc_max_wer": ["--qc-max-wer", "0.2"],
    "select": ["--select", "best"],
    "deliver_format": ["--deliver-format", "mp3"],
    "mp3_bitrate": ["--mp3-bitrate", "256"],
    "report": ["--report", "all"],
    "asr_models": ["--asr-models", "/m/whisper"],
    "word_timings": ["--word-timings"],
    "allow_roots": ["--allow-root", "/a", "--allow-root", "/b"],
    "max_input_mb": ["--max-input-mb", "10"],
    "read_timeout_s": ["--read-timeout", "5"],
    "storage_options": ["--storage-options", '{"anon": true}'],
    "executor": ["--executor", "ray"],
    "shard_size": ["--shard-size", "10"],
    "ray_address": ["--ray-address", "ray://head:10001"],
    "gpus": ["--gpu", "edit=0.5"],
    "batch_sizes": ["--batch-size", "edit=4", "--batch-size", "decode=2"],
    "stage_python": ["--stage-python", "edit=/venv/bin/python"],
    "stage_images": ["--stage-image", "decode=img:1"],
    "overwrite": ["--overwrite"],
    "incremental": ["--incremental"],
    "vad_max_pause": ["--vad-max-pause", "0.5"],
    "models_dir": ["--models", "/m/stepaudio"],
    "stepaudio_src": ["--stepaudio-src", "/src"],
    "prompt_mode": ["--prompt-mode", "fixed"],
    "llm_backend": ["--llm-backend", "vllm"],
    "segment_seconds": ["--segment-seconds", "20"],
    "until_judged": ["--until-judged", "--judge", "objective"],
}


def _flagged() -> list:
    return [item for item in declared(JobSpec) if item.setting and item.setting.flag]


def _command(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def test_every_setting_declares_whether_it_changes_the_output() -> None:
    undeclared = [item.name for item in declared(JobSpec) if item.setting is None]
    assert undeclared == []
    names = [item.name for item in declared(JobSpec)]
    assert len(names) == len(set(names))  # a name is the setting's key in run.json and the key
    for config in ENGINE_CONFIGS.values():  # every engine's settings reach the job and the engine
        for item in declared(config):
            assert item.name in names and item.name in EngineOptions.model_fields


def test_engines_list_their_own_settings(capsys) -> None:
    from stepedit_flows.cli import main

    assert main(["engines", "--json"]) == 0
    engines = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert engines["signal"]["settings"]["vad_max_pause"]["flag"] == "--vad-max-pause"
    model = engines["step-audio-editx"]["settings"]
    assert model["llm_backend"]["default"] == "transformers"
    assert model["stepaudio_greedy"]["flag"] is None  # the Python API's only


def test_a_field_added_without_a_declaration_is_found() -> None:
    class Forgot(SettingsGroup):
        """Forgot"""

        declared_one: Annotated[int, Setting("n", changes_output=False)] = 1
        bare: int = 2

    assert [item.name for item in declared(Forgot) if item.setting is None] == ["bare"]


def test_output_settings_follow_the_declared_rules() -> None:
    class Toy(SettingsGroup):
        """Toy"""

        always: Annotated[int, Setting("a", changes_output=True, fingerprint="always")] = 1
        new: Annotated[int, Setting("a setting added later", changes_output=True)] = 0
        looks: Annotated[str, Setting("review page only", changes_output=False)] = "x"
        form: Annotated[
            str,
            Setting(
                "f", changes_output=True, fingerprint="always", key="when_set", key_name="deliver"
            ),
        ] = "flac"
        rate: Annotated[
            int,
            Setting("r", changes_output=True, joins_with="form", key_name="deliver"),
        ] = 192

    def both(toy: Toy) -> tuple[dict, dict]:
        dumped = toy.model_dump()
        return output_settings(toy, "fingerprint", dumped), output_settings(toy, "key", dumped)

    fingerprint, key = both(Toy())
    assert fingerprint == {"always": 1, "form": "flac", "rate": 192}  # `new` at its default
    assert key == {"always": 1}  # form at its default: neither it nor rate
    fingerprint, key = both(Toy(new=3, looks="y", rate=320))
    assert fingerprint == {"always": 1, "new": 3, "form": "flac", "rate": 320}
    assert key == {"always": 1, "new": 3}  # rate joins the key only with form
    _, key = both(Toy(form="mp3", rate=320))
    assert key == {"always": 1, "deliver": ["mp3", 320]}


def test_settings_by_name_and_by_group_make_the_same_job() -> None:
    flat = JobSpec(manifest_uri="m", out="o", run_id="r", qc="acx", gpus={"edit": 0.5})
    grouped = JobSpec.model_validate(
        {
            "manifest_uri": "m",
            "out": "o",
            "run_id": "r",
            "quality": {"qc": "acx"},
            "execution": {"gpus": {"edit": 0.5}},
        }  # fmt: skip
    )
    assert flat == grouped and flat.qc == flat.quality.qc == "acx"
    dumped = flat.model_dump(mode="json")
    assert set(dumped) == set(JobSpec.setting_names())  # flat, by name, as run.json holds it
    assert JobSpec.model_validate(dumped) == flat
    # a group given whole keeps what it was given; settings by name fill in the rest
    mixed = JobSpec(
        manifest_uri="m", out="o", run_id="r", max_input_mb=5, storage_options={"key": "k"},
        inputs=InputsConfig(storage_options={"key": "secret"}, read_timeout_s=9.0),
    )  # fmt: skip
    assert (mixed.max_input_mb, mixed.read_timeout_s) == (5, 9.0)
    assert mixed.storage_options == {"key": "secret"}
    copied = flat.model_copy(update={"qc": "r128", "seed": 4})
    assert (copied.qc, copied.seed, flat.qc) == ("r128", 4, "acx")


def test_a_new_engine_setting_left_at_its_default_keeps_fingerprint_and_key() -> None:
    job = JobSpec(manifest_uri="m", out="o", run_id="r", engine="step-audio-editx")
    tuned = job.model_copy(update={"stepaudio_greedy": True})
    assert (
        "stepaudio_greedy" not in job.fingerprint() and "stepaudio_greedy" not in job.key_settings()
    )
    assert tuned.fingerprint()["stepaudio_greedy"] is True
    assert tuned.key_settings()["stepaudio_greedy"] is True
    # a setting that does not change the output never joins
    assert "report" not in job.model_copy(update={"report": "all"}).fingerprint()


@pytest.mark.parametrize("command", ["run", "validate", "demo", "deploy"])
def test_every_flagged_setting_is_an_option_with_its_declared_default_and_choices(command):
    options = {a.dest: a for a in _command(command)._actions}
    changed_by_command = {"demo": {"iterations", "overwrite"}, "deploy": {"incremental"}}
    for item in _flagged():
        action = options[item.name]
        assert item.setting.flag in action.option_strings
        if item.name not in changed_by_command.get(command, set()):
            expected = [] if item.default in ((), {}) else item.default
            assert action.default == expected, item.name
        kind = value_type(item.field.annotation)
        if typing.get_origin(kind) is Literal:
            assert tuple(action.choices) == typing.get_args(kind), item.name


def test_run_help_shows_the_settings_by_group() -> None:
    text = _command("run").format_help()
    titles = ["job:", "Rounds:", "Quality checks and delivery:", "Words and transcripts:",
              "Judging:", "Inputs and limits:", "Execution:", "Signal engine:",
              "Step-Audio-EditX engine:", "progress:"]  # fmt: skip
    places = [text.index(f"\n{title}\n") for title in titles]
    assert places == sorted(places)
    section = text[text.index("\nQuality checks and delivery:\n") : text.index("\nWords and")]
    assert "--qc {acx,r128,netflix,none}" in section and "(default: none)" in section


def test_other_values_on_the_command_line_reach_the_job() -> None:
    assert set(OTHER) == {item.name for item in _flagged()}  # a new flag needs a value here
    argv = ["run", *BASE, *(word for words in OTHER.values() for word in words)]
    job = _job(build_parser().parse_args(argv), "m.parquet")
    defaults = JobSpec(manifest_uri="m", out="o", run_id="x")
    for item in _flagged():
        if item.name != "executor":  # stage environments need the default, ray
            assert getattr(job, item.name) != getattr(defaults, item.name), item.name
    local = build_parser().parse_args(["run", *BASE, "--executor", "local"])
    assert _job(local, "m.parquet").executor == "local"
    assert job.gpus == {"edit": 0.5} and job.batch_sizes == {"edit": 4, "decode": 2}
    assert job.allow_roots == ["/a", "/b"] and job.word_timings == "auto"
    assert [str(e) for e in job.edits] == ["denoise", "speed=faster"]


def test_validate_builds_the_engine_run_would() -> None:
    engine_words = [
        w for name in ("llm_backend", "models_dir", "vad_max_pause") for w in OTHER[name]
    ]
    argv = [*engine_words, "--engine", "step-audio-editx", "--asr-models", "/m/w"]
    parser = build_parser()
    run = _job(parser.parse_args(["run", *BASE, *argv]), "m.parquet")
    validate = _job(parser.parse_args(["validate", "m.parquet", *argv]), "m.parquet")
    assert validate.engine_options() == run.engine_options()
    options = validate.make_engine().options
    assert (options.llm_backend, options.models_dir, options.vad_max_pause) == (
        "vllm",
        "/m/stepaudio",
        0.5,
    )
    assert options.word_timings == "auto"  # resolved as for run: an ASR model times words


def test_a_refused_setting_names_its_flag(capsys) -> None:
    from stepedit_flows.cli import main

    assert main(["validate", "m.parquet", "--shard-size", "0"]) == 2
    assert "--shard-size: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_report_media_defaults_to_what_runs_write() -> None:
    report = {a.dest: a for a in _command("report")._actions}["media"]
    declared_report = next(item for item in declared(JobSpec) if item.name == "report")
    assert report.default == declared_report.default
    assert tuple(report.choices) == typing.get_args(declared_report.field.annotation)


# where a command means another default than `stepedit run`, on purpose
COMMAND_DEFAULTS = {
    ("demo", "iterations"): 2,
    ("demo", "overwrite"): True,
    ("deploy", "incremental"): True,  # a schedule re-runs a catalog: redo only what changed
    ("eval run", "engine"): "step-audio-editx",
    ("eval run", "iterations"): 3,
    ("prompt", "engine"): "step-audio-editx",  # only the model engine sends instructions
}


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix} {name}".strip()
                yield path, sub
                yield from _commands(sub, path)


def test_no_command_drifts_from_the_declared_settings() -> None:
    by_flag = {item.setting.flag: item for item in _flagged()}
    checked = set()
    for command, parser in _commands(build_parser()):
        for action in parser._actions:
            item = next((by_flag[f] for f in action.option_strings if f in by_flag), None)
            if item is None or action.dest != item.name:
                continue  # another command's own option that shares a flag (judge --model...)
            checked.add(command)
            wanted = COMMAND_DEFAULTS.get((command, item.name), item.default)
            wanted = [] if wanted in ((), {}) else wanted
            assert action.default == wanted, (command, item.name)
            kind = value_type(item.field.annotation)
            if typing.get_origin(kind) is Literal:
                assert tuple(action.choices) == typing.get_args(kind), (command, item.name)
    assert {"run", "validate", "demo", "deploy", "judge", "eval run", "dataset margin"} <= checked


JUDGE_COMMANDS = {"run": None, "judge": None, "eval run": None, "dataset margin": "margin"}


def test_the_judge_options_of_every_command_come_from_the_judge_declarations() -> None:
    from stepedit_core.judges.spec import JudgeSpec

    judge_items = [item for item in declared(JudgeSpec)]
    assert all(item.setting and item.setting.flag for item in judge_items)
    # the judge's options share the command line's namespace with the job's settings
    assert not {item.name for item in judge_items} & set(JobSpec.setting_names())
    commands = dict(_commands(build_parser()))
    for command in ("run", "demo", "validate", "deploy", "judge", "eval run", "dataset margin"):
        options = {a.dest: a for a in commands[command]._actions}
        offered = [item for item in judge_items if item.name in options]
        wanted = {"kind", "endpoint", "model", "key_env", "concurrency"}
        assert wanted <= {item.name for item in offered}, command
        for item in offered:
            action = options[item.name]
            assert action.option_strings == [item.setting.flag], (command, item.name)
            default = None if item.name == "kind" else item.default
            assert action.default == default, (command, item.name)
        # objective measurements judge rounds, not the margins of a pair
        all_judges = ("gemini", "openai", "objective")
        judges = ("gemini", "openai") if command == "dataset margin" else all_judges
        assert tuple(options["kind"].choices) == judges, command
        assert options["kind"].required == (command in ("judge", "eval run")), command
    assert "prompts" not in {a.dest for a in commands["dataset margin"]._actions}


def test_run_offers_until_judged_beside_the_judge_and_builds_the_judge(tmp_path) -> None:
    section = _command("run").format_help().split("\nJudging:\n")[1].split("\n\n")[0]
    assert "--until-judged" in section and "--judge {gemini,openai,objective}" in section
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"emotion": "Is it {label}?"}))
    argv = ["run", *BASE, "--judge", "objective", "--until-judged", "--prompts", str(prompts),
            "--concurrency", "3"]  # fmt: skip
    job = _job(build_parser().parse_args(argv), "m.parquet")
    assert job.until_judged and job.judge.kind == "objective" and job.judge.concurrency == 3
    assert job.judge.prompts["emotion"] == "Is it {label}?"  # the file's text, not its path
    assert _job(build_parser().parse_args(["run", *BASE]), "m.parquet").judge is None


def test_a_bad_judge_option_is_refused_naming_it(capsys, tmp_path) -> None:
    from stepedit_flows.cli import main

    bad = tmp_path / "prompts.json"
    bad.write_text("{not json")
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["run", *BASE, "--judge", "objective", "--prompts", str(bad)])
    assert exit_.value.code == 2
    assert "--prompts" in capsys.readouterr().err
    assert main(["validate", "m.parquet", "--judge", "gemini"]) == 2
    assert "the gemini judge needs --model" in capsys.readouterr().err
    assert main(["validate", "m.parquet", "--until-judged"]) == 2
    assert "--until-judged needs --judge" in capsys.readouterr().err


def test_the_qc_plan_is_built_from_the_declared_quality_settings() -> None:
    from stepedit_core.quality.config import QualityConfig
    from stepedit_core.quality.delivery import QcPlan

    output_changing = {d.name for d in declared(QualityConfig) if d.setting.changes_output}
    assert output_changing <= set(QcPlan.settings())  # nothing that decides QC is left out
    assert QcPlan() == JobSpec(manifest_uri="m", out="o", run_id="x").qc_plan()
    job = JobSpec(manifest_uri="m", out="o", run_id="x", qc="acx", qc_heavy=True,
                  select="best", asr_models="/a", qc_max_wer=0.2, deliver_format="mp3",
                  mp3_bitrate=256)  # fmt: skip
    assert job.qc_plan() == QcPlan(profile="acx", heavy=True, select="best", asr_models="/a",
                                   max_wer=0.2, deliver_format="mp3", mp3_bitrate=256)  # fmt: skip
    with pytest.raises(ValueError, match="ACX takes MP3 at 192 kbps or more"):
        JobSpec(manifest_uri="m", out="o", run_id="x", qc="acx", deliver_format="mp3",
                mp3_bitrate=160)  # fmt: skip
