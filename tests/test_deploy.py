"""Scheduled runs without a server: run ids, claims, final states, deploy-time refusals and the
repository's prefect.yaml."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from stepedit_core.foundation.store import RunStore
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.cli import build_parser, main
from stepedit_flows.deploy import ENTRYPOINT, job_parameters
from stepedit_flows.run_names import MAX_NAME_LENGTH, artifact_key, check_name, stamped_run_id
from stepedit_flows.scheduled import (
    FLOW_NAME,
    claim_run_id,
    job_spec,
    outcome,
    scheduled_edit_catalog,
)

from conftest import write_clip, write_manifest

SLOT = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[1]


def test_run_id_is_stamped_in_utc():
    assert stamped_run_id("nightly", SLOT) == "nightly-20261127T020000Z"
    local = datetime.fromisoformat("2026-11-27T03:00:00+01:00")
    assert stamped_run_id("nightly", local) == "nightly-20261127T020000Z"
    with_run = stamped_run_id("nightly", SLOT, "8f14e45f-ceea-467f-a0e6-6b9e4a1c2d3e")
    assert with_run == "nightly-20261127T020000Z-8f14e45f"
    longest = stamped_run_id("n" * MAX_NAME_LENGTH, SLOT, "8f14e45f-ceea")
    assert JobSpec(manifest_uri="m", out="o", run_id=longest).run_id == longest


@pytest.mark.parametrize("bad", ["", "-x", "a/b", "n" * (MAX_NAME_LENGTH + 1), "two words"])
def test_names_that_can_not_prefix_a_run_id_are_refused(bad):
    with pytest.raises(ValueError, match="prefixes the run id"):
        check_name(bad)


def test_artifact_key_is_what_prefect_accepts():
    assert artifact_key("Nightly_EN.v2") == "stepedit-schedule-nightly-en-v2"


def test_auto_scheduled_run_claims_the_plain_stamp_and_a_retry_finds_it(tmp_path):
    out = str(tmp_path)
    first = claim_run_id(out, "nightly", SLOT, "aaaaaaaa-1111", auto_scheduled=True)
    assert first == "nightly-20261127T020000Z"
    claim = json.loads(Path(RunStore(out, first).scheduled_claim).read_text())
    assert claim["flow_run_id"] == "aaaaaaaa-1111" and claim["deployment"] == "nightly"
    # the same flow run retried: same folder
    assert claim_run_id(out, "nightly", SLOT, "aaaaaaaa-1111", auto_scheduled=True) == first
    # another flow run for the same slot (a re-created deployment, say): never the same folder
    other = claim_run_id(out, "nightly", SLOT, "bbbbbbbb-2222", auto_scheduled=True)
    assert other == "nightly-20261127T020000Z-bbbbbbbb"


def test_runs_started_by_hand_always_carry_their_flow_run(tmp_path):
    a = claim_run_id(str(tmp_path), "nightly", SLOT, "aaaaaaaa-1", auto_scheduled=False)
    b = claim_run_id(str(tmp_path), "nightly", SLOT, "bbbbbbbb-2", auto_scheduled=False)
    assert (a, b) == ("nightly-20261127T020000Z-aaaaaaaa", "nightly-20261127T020000Z-bbbbbbbb")
    assert sorted(p.name for p in tmp_path.iterdir()) == [a, b]


def test_a_folder_from_an_unclaimed_earlier_run_is_left_alone(tmp_path):
    (tmp_path / "nightly-20261127T020000Z").mkdir()
    (tmp_path / "nightly-20261127T020000Z" / "run.json").write_text("{}")
    run_id = claim_run_id(str(tmp_path), "nightly", SLOT, "cccccccc-3", auto_scheduled=True)
    assert run_id == "nightly-20261127T020000Z-cccccccc"


def test_job_parameters_refuse_unknown_fields_and_run_ids():
    job = {"manifest_uri": "m.parquet", "out": "runs", "edits": ["denoise"]}
    assert [str(e) for e in job_spec(job, "r-1").edits] == ["denoise"]
    with pytest.raises(ValueError, match="unknown job parameter.*iteration"):
        job_spec({**job, "iteration": 3}, "r-1")
    with pytest.raises(ValueError, match="stamps its own"):
        job_spec({**job, "run_id": "fixed"}, "r-1")


def _record(ok: int, failed: int, errors: dict[str, int]) -> dict:
    return {
        "run_id": "nightly-20261127T020000Z",
        "counts": {"rows": ok + failed, "ok": ok, "failed": failed, "refused_at_plan": 0},
        "errors_by_code": errors,
    }


def test_any_failed_row_makes_the_flow_run_failed():
    done = outcome(_record(3, 0, {}))
    assert done.is_completed() and "3 rows, 3 ok, 0 failed" in done.message
    partial = outcome(_record(2, 1, {"missing_file": 1}))
    assert partial.is_failed()
    assert partial.message.endswith("3 rows, 2 ok, 1 failed (missing_file: 1)")


@pytest.fixture()
def manifest(tmp_path):
    return write_manifest(
        tmp_path / "m.parquet",
        [{"clip_id": "a", "audio_uri": write_clip(tmp_path / "a.wav", 0.5)}],
    )


def _deploy(manifest, out, *extra):
    return [
        "deploy",
        "--name",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--edit",
        "loudness=-23",
        *extra,
    ]


def test_job_parameters_are_every_jobspec_field_but_the_run_id(manifest, tmp_path):
    args = build_parser().parse_args(_deploy(manifest, tmp_path, "--iterations", "2"))
    job = job_parameters(args)
    assert set(job) == set(JobSpec.setting_names()) - {"run_id"}
    assert job["iterations"] == 2 and job["edits"] == ["loudness=-23"]
    # what the flow rebuilds from the deployment's parameters is the job that was checked
    assert job_spec(job, "nightly-x").model_dump(mode="json", exclude={"run_id"}) == job


def test_the_job_parameter_is_typed_for_prefect(manifest, tmp_path):
    """Prefect checks a deployment's parameters against the flow's schema when it registers
    them (enforce_parameter_schema) and draws its form from it: every setting is there with its
    type, default and help, and what `stepedit deploy` stores passes that check."""
    import jsonschema
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(scheduled_edit_catalog).model_dump()
    job_schema = schema["definitions"]["ScheduledJob"]
    fields = job_schema["properties"]
    assert set(fields) == set(JobSpec.setting_names()) - {"run_id"}
    assert set(job_schema["required"]) == {"manifest_uri", "out"}
    assert fields["iterations"]["type"] == "integer" and fields["iterations"]["maximum"] == 5
    assert fields["edits"]["items"] == {"type": "string"}  # edits travel as "type=option"
    assert fields["qc"]["enum"] == ["acx", "r128", "netflix", "none"]
    assert fields["incremental"]["default"] is True  # scheduled runs are incremental
    assert fields["out"]["description"] == "output root: local path or fsspec URI"
    assert job_schema["additionalProperties"] is False

    args = build_parser().parse_args(_deploy(manifest, tmp_path, "--iterations", "2"))
    params = {"name": "nightly", "job": job_parameters(args)}
    validator = jsonschema.Draft202012Validator({**schema, "$defs": schema["definitions"]})
    assert not list(validator.iter_errors(params))
    for bad in ({"iterations": 9}, {"qc": "loud"}, {"iteration": 2}):
        assert list(validator.iter_errors({**params, "job": {**params["job"], **bad}}))


def test_the_flow_refuses_bad_job_parameters_by_name():
    job = {"manifest_uri": "m.parquet", "out": "runs"}
    assert job_spec(job, "r-1").incremental  # the deployment did not say: incremental
    assert not job_spec({**job, "incremental": False}, "r-1").incremental
    with pytest.raises(ValueError, match="iterations"):
        job_spec({**job, "iterations": 9}, "r-1")
    with pytest.raises(ValueError, match="edits"):
        job_spec({**job, "edits": ["no-such-edit"]}, "r-1")


@pytest.fixture()
def unreachable_server():
    """A PREFECT_API_URL nobody listens on: a refusal must come before any request."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        yield


def _refused(args, capsys) -> str:
    assert main(args) == 2
    return capsys.readouterr().err


def test_deploy_refuses_what_a_run_refuses(tmp_path, unreachable_server, capsys):
    bad = write_manifest(tmp_path / "bad.parquet", [{"clip_id": "a"}])
    assert "audio_uri" in _refused(_deploy(bad, tmp_path), capsys)
    missing = str(tmp_path / "nope.parquet")
    assert "nope.parquet" in _refused(_deploy(missing, tmp_path), capsys)


def test_deploy_refuses_bad_options(manifest, tmp_path, unreachable_server, capsys):
    assert "iterations" in _refused(_deploy(manifest, tmp_path, "--iterations", "9"), capsys)
    model_engine = _deploy(manifest, tmp_path, "--engine", "step-audio-editx")
    assert "does not support edit loudness" in _refused(model_engine, capsys)
    model_engine[model_engine.index("loudness=-23")] = "emotion=happy"
    assert "models" in _refused(model_engine, capsys)  # no model folder given
    assert "--overwrite" in _refused(_deploy(manifest, tmp_path, "--overwrite"), capsys)
    long_name = _deploy(manifest, tmp_path)
    long_name[2] = "n" * (MAX_NAME_LENGTH + 1)
    assert "prefixes the run id" in _refused(long_name, capsys)


def test_deploy_refuses_a_bad_schedule_before_contacting_the_server(
    manifest, tmp_path, unreachable_server, capsys
):
    args = _deploy(manifest, tmp_path)
    args[args.index("--cron") + 1] = "61 * * * *"
    assert "bad schedule" in _refused(args, capsys)


def test_deploy_says_when_the_server_can_not_be_reached(
    manifest, tmp_path, unreachable_server, capsys
):
    assert "127.0.0.1:9" in _refused(_deploy(manifest, tmp_path), capsys)


def test_deploy_needs_a_server(manifest, tmp_path, capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert "PREFECT_API_URL" in _refused(_deploy(manifest, tmp_path), capsys)
        assert "PREFECT_API_URL" in _refused(["deployments"], capsys)


def test_prefect_yaml_points_at_the_flow_with_valid_jobs(monkeypatch):
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.utilities.importtools import import_object
    from prefect.utilities.templating import apply_values

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert config["pull"] == []  # the flow comes from the installed package
    assert config["deployments"]
    for deployment in config["deployments"]:
        assert deployment["entrypoint"] == ENTRYPOINT
        assert import_object(deployment["entrypoint"]) is scheduled_edit_catalog
        assert scheduled_edit_catalog.name == FLOW_NAME
        for schedule in deployment["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
        # `prefect deploy` fills {{ $VAR }} placeholders from the environment
        monkeypatch.setenv("STEPEDIT_MANIFEST", "s3://b/m.parquet")
        monkeypatch.setenv("STEPEDIT_OUT", "s3://b/runs")
        params = apply_values(deployment["parameters"], {})
        check_name(params.get("name", deployment["name"]))
        spec = job_spec(params["job"], stamped_run_id(deployment["name"], SLOT))
        assert spec.manifest_uri == "s3://b/m.parquet" and spec.edits
