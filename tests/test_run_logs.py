"""The run's log file: Prefect's and Ray's lines under RUN/_work/logs/, uploaded from a local
file when the run folder is on object storage, kept by --overwrite."""

import logging
from pathlib import Path

import pytest

from stepedit_core.foundation.store import RunStore
from stepedit_flows.run_logs import run_log


def test_lines_of_prefect_and_ray_loggers_are_written_once_each(tmp_path, monkeypatch):
    # as in a fresh process, whatever Ray did to its loggers earlier in this session
    for name in ("ray", "ray.data"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    store = RunStore(str(tmp_path), "r")
    with run_log(store) as uri:
        logging.getLogger("prefect.flow_runs").warning("from prefect")
        logging.getLogger("ray.data").warning("from ray")
        # once Ray is set up its logger keeps its records from the root's handlers
        monkeypatch.setattr(logging.getLogger("ray"), "propagate", False)
        logging.getLogger("ray.data").warning("from a started ray")
        # and once Ray Data ran, so does its own logger
        monkeypatch.setattr(logging.getLogger("ray.data"), "propagate", False)
        logging.getLogger("ray.data").warning("from Ray Data")
    logging.getLogger("prefect.flow_runs").warning("after the run")
    text = Path(uri).read_text()
    assert text.count("from prefect") == 1 and text.count("from ray") == 1
    assert text.count("from a started ray") == 1 and text.count("from Ray Data") == 1
    assert "after the run" not in text and "| WARNING |" in text
    # --overwrite clears the run's outputs and work files, not its logs
    store.clear_outputs()
    assert Path(uri).read_text() == text


def test_on_object_storage_the_log_is_uploaded_when_the_attempt_ends_even_by_a_crash(s3):
    store = RunStore("s3://runs/logged", "r")
    with pytest.raises(RuntimeError), run_log(store) as uri:
        logging.getLogger("prefect.task_runs").warning("a line before the crash")
        raise RuntimeError("crash")
    assert uri.startswith("s3://runs/logged/r/_work/logs/") and uri.endswith(".log")
    s3.invalidate_cache()
    assert b"a line before the crash" in s3.cat(uri.removeprefix("s3://"))
