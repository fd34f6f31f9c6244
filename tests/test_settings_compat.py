"""Settings compatibility: runs started before the settings were declared must resume, and their
incremental keys must still match. The goldens were computed by tests/settings_goldens/capture.py
on the code that predates the declarations; they must never be regenerated."""

import json
from pathlib import Path

import pytest

from stepedit_core.engines import make_engine
from stepedit_core.lifecycle.incremental import key_settings
from stepedit_core.lifecycle.job import JobSpec

GOLDENS = Path(__file__).parent / "settings_goldens"
CASES = json.loads((GOLDENS / "fingerprints.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_fingerprint_and_key_settings_match_the_frozen_values(name: str) -> None:
    case = CASES[name]
    job = JobSpec(**case["job"])
    engine = make_engine(job.engine, job.engine_options())
    assert job.fingerprint() == case["fingerprint"]
    assert engine.version == case["engine_version"]  # else the key changes on purpose
    assert key_settings(job, engine) == case["key_settings"]


def test_a_run_json_written_before_the_declarations_loads_and_resumes() -> None:
    record = json.loads((GOLDENS / "old_run.json").read_text())
    earlier = json.loads((GOLDENS / "old_job.json").read_text())["fingerprint"]
    job = JobSpec.model_validate(record["parameters"])
    assert (job.run_id, job.iterations, job.seed, job.deliver_format) == ("old", 2, 3, "wav")
    fingerprint = job.fingerprint()
    # what run.py compares when an attempt resumes: every key of the new fingerprint
    changed = sorted(k for k in fingerprint if earlier.get(k) != fingerprint[k])
    assert changed == []
    assert set(earlier) - set(fingerprint) == {"manifest_sha256"}  # added by the run itself


JUDGED = json.loads((GOLDENS / "judged.json").read_text())


@pytest.mark.parametrize("name", sorted(n for n in JUDGED if "job" in JUDGED[n]))
def test_a_judged_job_keeps_its_frozen_fingerprint_and_key_settings(name: str) -> None:
    case = JUDGED[name]
    job = JobSpec(**case["job"])
    engine = make_engine(job.engine, job.engine_options())
    assert job.fingerprint() == case["fingerprint"]
    assert key_settings(job, engine) == case["key_settings"]


def test_a_judged_run_from_the_command_line_keeps_its_frozen_fingerprint(monkeypatch) -> None:
    from stepedit_flows.cli import build_parser
    from stepedit_flows.run_options import job_from_args

    case = JUDGED["cli_judged_openai"]
    monkeypatch.setenv("JUDGE_KEY", "k")  # the judge refuses a key variable that is not set
    args = build_parser().parse_args(case["argv"])
    assert job_from_args(args, args.manifest).fingerprint() == case["fingerprint"]
