"""A stage in a Python environment of its own: settings, the Ray executor running the stage's
workers with another interpreter, and the version report `stepedit validate` prints."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from work_items import row_item

from stepedit_core.executors.ray_data import RayDataExecutor
from stepedit_core.foundation.stages import Resources, Stage, WorkItem
from stepedit_core.lifecycle.stage_envs import (
    StageEnv,
    StageEnvError,
    check_stage_names,
    probe,
    problems,
    report,
    stage_envs,
)


class WhereStage(Stage):
    """Records which interpreter ran it on every item, as a line of the item's text: a Ray
    worker unpickles only builtins and the library's own types, never this module's."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.resources = Resources(cpus=0.2)
        self.batch_size = 4

    def process_batch(self, items: list[WorkItem]) -> list[WorkItem]:
        for item in items:
            item.text = f"{item.text or ''}{self.name}={sys.prefix}|{sys.executable}\n"
        return items


@pytest.fixture(scope="module")
def other_python(tmp_path_factory) -> Path:
    """A second virtualenv: its own interpreter and prefix, seeing this environment's packages
    (Ray, torch, stepedit) through a .pth file instead of installing them again."""
    root = tmp_path_factory.mktemp("other-env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # every package folder this interpreter sees: a virtualenv made with system site packages
    # (Ray and torch installed once, globally) has them outside its own purelib
    ours = [sysconfig.get_paths()["purelib"]]
    ours += [
        p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and p not in ours
    ]
    # `site.addsitedir` also runs this environment's own .pth files (the editable install).
    lines = "".join(f"import site; site.addsitedir({folder!r})\n" for folder in ours)
    Path(purelib, "parent_env.pth").write_text(lines)
    return python


def test_interpreter_or_image_per_stage_and_never_both():
    envs = stage_envs({"decode": "/opt/upstream/bin/python"}, {"tokenize": "registry/up:1"})
    assert envs["decode"].runtime_env() == {"py_executable": "/opt/upstream/bin/python"}
    assert envs["tokenize"].runtime_env() == {"image_uri": "registry/up:1"}
    assert StageEnv().runtime_env() is None
    with pytest.raises(StageEnvError, match="not both"):
        stage_envs({"edit": "/x/python"}, {"edit": "img"})


def test_an_environment_for_an_unknown_stage_is_refused():
    envs = stage_envs({"decoder": "/x/python"})
    with pytest.raises(StageEnvError, match="no stage 'decoder'.*tokenize, edit, decode"):
        check_stage_names(envs, ["tokenize", "edit", "decode"])
    check_stage_names(stage_envs({"decode": "/x/python"}), ["tokenize", "edit", "decode"])


def test_probe_reports_the_other_interpreter_and_what_it_lacks(other_python):
    versions = probe(str(other_python))
    assert Path(versions["executable"]) == other_python
    assert versions["ray"] and versions["stepedit"] and versions["python"]
    driver = dict(versions, ray="0.0.1", python="3.1.0")
    assert problems(versions, driver) == [
        f"Python {versions['python']} (the cluster runs 3.1)",
        f"ray {versions['ray']} (the cluster runs 0.0.1)",
    ]
    assert problems(dict(versions, stepedit=None), versions) == ["stepedit is not installed there"]
    rows = report(["edit", "decode"], stage_envs({"decode": str(other_python)}))
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("edit", "the driver's interpreter", []),
        ("decode", f"interpreter {other_python}", []),
    ]
    assert rows[0][2]["executable"] == sys.executable
    assert Path(rows[1][2]["executable"]) == other_python
    missing = report(["decode"], stage_envs({"decode": str(other_python) + "-missing"}))
    assert "can not run it" in missing[0][3][0] and missing[0][2] is None


def test_the_ray_executor_runs_a_stage_with_its_own_interpreter(other_python, ray_cluster):
    from ray import cloudpickle

    # Ray's workers can not import this test module: ship the stand-in stage by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    stages = [WhereStage("elsewhere"), WhereStage("here")]
    executor = RayDataExecutor(stage_envs=stage_envs({"elsewhere": str(other_python)}))
    items = [row_item(i, f"c{i}", "unused.wav", ()) for i in range(6)]
    done = sorted(executor.run(stages, items), key=lambda item: item.row_index)
    assert [item.clip_id for item in done] == [f"c{i}" for i in range(6)]
    for item in done:
        ran = dict(line.split("=", 1) for line in str(item.text).splitlines())
        prefix, executable = ran["elsewhere"].split("|")
        assert Path(prefix) == other_python.parent.parent
        assert Path(executable) == other_python
        assert ran["here"] == f"{sys.prefix}|{sys.executable}"


def test_a_job_with_stage_environments_needs_the_ray_executor():
    from pydantic import ValidationError

    from stepedit_core.lifecycle.job import JobSpec

    job = JobSpec(manifest_uri="m", out="o", run_id="r", stage_python={"edit": "/x/python"})
    assert job.stage_envs() == {"edit": StageEnv(python="/x/python")}
    with pytest.raises(ValidationError, match="needs --executor ray"):
        JobSpec(manifest_uri="m", out="o", run_id="r", executor="local", stage_images={"e": "i"})


def _validate(manifest: str, capsys, *extra: str) -> tuple[int, str, str]:
    from stepedit_flows.cli import main

    code = main(["validate", manifest, "--edit", "denoise", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_validate_reports_what_runs_each_stage(other_python, tmp_path, capsys):
    from conftest import write_clip, write_manifest

    manifest = write_manifest(
        tmp_path / "m.parquet",
        [{"clip_id": "a", "audio_uri": write_clip(tmp_path / "a.wav", 0.5)}],
    )
    code, out, err = _validate(manifest, capsys, "--stage-python", f"signal_edit={other_python}")
    assert code == 0, err
    line = next(x for x in out.splitlines() if "stage signal_edit:" in x)
    versions = probe(str(other_python))
    assert f"interpreter {other_python}: python {versions['python']}" in line
    assert f"ray {versions['ray']}" in line and "transformers" in line and "torchaudio" in line
    code, _, err = _validate(manifest, capsys, "--stage-python", "signal=/x/python")
    assert code == 2 and "no stage 'signal'" in err and "signal_edit" in err
    code, out, err = _validate(manifest, capsys, "--stage-python", "signal_edit=/missing/python")
    assert code == 2 and "stage signal_edit: /missing/python: can not run it" in err
    assert "versions unknown" in out
