"""The run's options on the command line (`run`, `demo`, `validate`, `deploy`, `dataset`) and the
JobSpec built from them. The options are generated from the settings' declarations (job.py and
the engines' config modules, through setting_options.py). The command modules import this
module; it imports no command module but judge_cli's judge options."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from stepedit_core.foundation.edits import EditError, EditSpec, parse_edit
from stepedit_core.lifecycle.job import InputsConfig, JobSpec
from stepedit_flows.exit_statuses import Refused
from stepedit_flows.judge_cli import add_judge_options, judge_spec
from stepedit_flows.setting_options import add_setting_options, flag_of, settings_from_args


def edit_arg(text: str) -> EditSpec:
    try:
        return parse_edit(text)
    except EditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _storage_options_arg(text: str) -> dict:
    """JSON text, or @FILE holding it (keeps secrets off the command line, which other users
    of the machine can see)."""
    from stepedit_core.catalog.access import parse_storage_options

    try:
        if text.startswith("@"):
            text = Path(text[1:]).read_text()
        return parse_storage_options(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# settings whose values need more than a type to parse: setting name -> parser of one value
SETTING_PARSERS = {"edits": edit_arg, "storage_options": _storage_options_arg}


def add_access_options(p: argparse.ArgumentParser) -> None:
    """Which sources may be read and how (for commands that run jobs of their own)."""
    add_setting_options(p, InputsConfig, SETTING_PARSERS)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Every setting of a job that has a flag (declared in job.py, the engines' config modules
    and the judge's spec), then how much the run prints."""
    add_setting_options(p, JobSpec, SETTING_PARSERS)
    add_judge_options(p)  # beside --until-judged, in the "Judging" group
    talk = p.add_argument_group("progress").add_mutually_exclusive_group()
    talk.add_argument(
        "--quiet",
        action="store_true",
        help="no progress; the summary (and warnings and errors) is still printed",
    )
    talk.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show Prefect's and Ray's log lines (by default they go to the Prefect "
        "backend and to RUN/_work/logs/ only)",
    )


def job_from_args(args: argparse.Namespace, manifest: str) -> JobSpec:
    """The job of `run`, `demo`, `validate` and `deploy`: every declared setting the command
    line holds, and the judge's options (judge_cli.py)."""
    try:
        return JobSpec(
            **settings_from_args(args, JobSpec),
            manifest_uri=manifest,
            out=args.out,
            run_id=args.run_id,
            judge=judge_spec(args),
        )
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise Refused(problems) from None


def _problem(error: dict) -> str:
    """One validation error as "--flag: message" (a check across settings names none)."""
    where = flag_of(JobSpec, tuple(error["loc"])) or ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
