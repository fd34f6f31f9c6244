"""`stepedit dataset ...`: training data made from a catalog (see stepedit_core.dataset).

Prefect is imported only once a command runs (after the console's log level is set), like the
rest of the command line."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pydantic import ValidationError

from stepedit_flows.exit_statuses import Refused
from stepedit_flows.run_command import check_before_run, flow_session, use_local_server

if TYPE_CHECKING:
    from stepedit_core.dataset import MarginSpec
    from stepedit_core.judges.spec import JudgeSpec


# what `dataset margin` passes on to its run (MarginSpec.create)
MARGIN_SETTINGS = (
    "engine",
    "models_dir",
    "stepaudio_src",
    "executor",
    "shard_size",
    "seed",
    "ray_address",
    "overwrite",
    "report",
    "allow_roots",
    "max_input_mb",
    "read_timeout_s",
    "storage_options",
)
# the judge's options `dataset margin` takes (its prompt is --margin-prompt)
MARGIN_JUDGE_SETTINGS = ("kind", "endpoint", "model", "key_env", "concurrency")
MARGIN_JUDGES = ("gemini", "openai")  # objective measurements score no margins


def add_dataset_commands(sub: argparse._SubParsersAction) -> None:
    from stepedit_core.dataset.margin_set import DEFAULT_MIN_MARGIN
    from stepedit_core.dataset.scorers import SCORERS
    from stepedit_core.lifecycle.job import JobSpec
    from stepedit_flows.judge_cli import add_judge_options
    from stepedit_flows.run_options import SETTING_PARSERS, edit_arg
    from stepedit_flows.setting_options import add_setting_options

    dataset = sub.add_parser("dataset", help="training data made from a catalog")
    commands = dataset.add_subparsers(dest="dataset_command", required=True)
    margin = commands.add_parser(
        "margin",
        help="(neutral, edited) pairs per clip and attribute, margin-scored, as a dataset",
        description="For each row, a neutral version (the source audio; engines that clone: "
        "a clone of the row's text in its voice) and one edited version per --attribute, made "
        "by one durable run; each pair scored 1-10 and kept at --min-margin or more. Writes "
        "OUT/RUN_ID/dataset/sft.parquet and its data card README.md.",
    )
    margin.add_argument("manifest", help="Parquet manifest: local path or fsspec URI")
    margin.add_argument("--out", required=True, help="output root: local path or fsspec URI")
    margin.add_argument("--run-id", required=True)
    margin.add_argument(
        "--attribute",
        action="append",
        required=True,
        type=edit_arg,
        metavar="TYPE[=OPTION]",
        help="an edit of the vocabulary whose pairs to make; repeatable",
    )
    margin.add_argument(
        "--min-margin",
        type=float,
        default=DEFAULT_MIN_MARGIN,
        help=f"keep pairs scored at least this, 1..10 (default {DEFAULT_MIN_MARGIN:g})",
    )
    margin.add_argument(
        "--scorer",
        choices=SCORERS,
        default="objective",
        help="objective: what the edit measurably did (speed, denoise, loudness, vad)",
    )
    margin.add_argument(
        "--dnsmos",
        action="store_true",
        help="denoise margins also count the DNSMOS gain (pip install 'stepedit[qc-heavy]'; "
        "about 0.8 s a pair on one core)",
    )
    # margins from an audio model judge, asked how clearly the attribute differs between the
    # neutral and the edited version (any attribute: emotion, style...); the judge's prompt
    # is the margin prompt below, so --prompts is not offered
    add_judge_options(
        margin,
        only=MARGIN_JUDGE_SETTINGS,
        overrides={
            "kind": {
                "choices": MARGIN_JUDGES,
                "help": "an audio model judge scores "
                "each pair's margin: Gemini or OpenAI-compatible",
            }
        },
    )
    margin.add_argument(
        "--margin-prompt",
        default=None,
        metavar="FILE",
        help="the judge's prompt template ({attribute}: the edit, {what}: what it changes)",
    )
    # the job settings a margin set's run takes, as `stepedit run` declares them
    add_setting_options(margin, JobSpec, SETTING_PARSERS, only=MARGIN_SETTINGS)
    margin.add_argument("--quiet", action="store_true")
    add_preference_commands(commands)


def add_preference_commands(commands: argparse._SubParsersAction) -> None:
    from stepedit_core.dataset.preferences import PARALINGUISTIC_MARGIN, RATING_MARGIN

    prefs = commands.add_parser(
        "preferences",
        help="(chosen, rejected) pairs of rounds from a judged or rated run, as a dataset",
        description="For each clip of a finished run, pairs of rounds (iteration 0: what the "
        "clip started from) where a judge's verdict is the clip's label for one round and not "
        f"for the other (paralinguistic: scores {PARALINGUISTIC_MARGIN} or more apart), or "
        f"where one reviewer's 1-5 ratings differ by more than {RATING_MARGIN}. Writes "
        "DIR/preferences.parquet, the rounds' audio under DIR/audio/ and the data card "
        "DIR/README.md.",
    )
    prefs.add_argument("run", metavar="RUN_DIR_OR_URI")
    prefs.add_argument("--out", required=True, metavar="DIR", help="local path or fsspec URI")
    ratings = commands.add_parser(
        "import-ratings",
        help="add a review page's ratings export (JSON or CSV) to the run as sealed records",
    )
    ratings.add_argument("run", metavar="RUN_DIR_OR_URI")
    ratings.add_argument("file", metavar="FILE", help="ratings file from the review page")


def cmd_dataset(args: argparse.Namespace) -> int:
    from stepedit_core.catalog.access import storage_options_installed
    from stepedit_core.dataset import MarginSpec, build_margin_set
    from stepedit_core.dataset.margin_set import check_attributes, write_pair_rows
    from stepedit_flows.run_logs import console_logging

    if args.dataset_command == "preferences":
        return cmd_preferences(args)
    if args.dataset_command == "import-ratings":
        return cmd_import_ratings(args)
    console_logging(False)  # before Prefect is imported (stepedit_flows.margin_set)
    use_local_server()
    from stepedit_flows.margin_set import summary_text

    judge, margin_prompt = _margin_judge(args)
    try:
        spec = MarginSpec.create(
            args.manifest,
            args.attribute,
            args.out,
            args.run_id,
            min_margin=args.min_margin,
            scorer="judge" if judge else args.scorer,
            dnsmos=args.dnsmos,
            judge=judge,
            margin_prompt=margin_prompt,
            report=args.report,
            engine=args.engine,
            models_dir=args.models_dir,
            stepaudio_src=args.stepaudio_src,
            executor=args.executor,
            shard_size=args.shard_size,
            seed=args.seed,
            ray_address=args.ray_address,
            overwrite=args.overwrite,
            allow_roots=args.allow_roots,
            storage_options=args.storage_options,
        )
    except (ValidationError, ValueError) as exc:
        raise Refused(_problems(exc)) from None
    job = spec.job
    with storage_options_installed(job.storage_options, job.storage_uris()):
        check_attributes(spec)
        write_pair_rows(spec)
        if not check_before_run(job):  # the run finished: score and write the set only
            print(summary_text(build_margin_set(spec)), end="")
            return 0
    return _run_margin_flow(spec, args.quiet)


def _margin_judge(args: argparse.Namespace) -> tuple[JudgeSpec | None, str | None]:
    """The margin judge and its prompt template from the command line (None: no --judge)."""
    from stepedit_core.dataset.judge_scorer import MarginPromptError, load_margin_prompt
    from stepedit_core.judges.spec import JudgeSpec
    from stepedit_flows.setting_options import setting_named

    # an option counts as given when it is off its declared default
    defaults = {name: setting_named(JudgeSpec, name).default for name in MARGIN_JUDGE_SETTINGS}
    defaults.update(kind=None, margin_prompt=None)
    given = [o for o in defaults if o != "kind" and getattr(args, o) != defaults[o]]
    if args.kind is None:
        if given:
            names = ", ".join("--" + o.replace("_", "-") for o in given)
            raise Refused(f"{names}: only with --judge gemini|openai")
        return None, None
    if args.scorer != "objective":  # the default: --judge chooses the judge scorer
        raise Refused("--judge scores the margins: leave --scorer out")
    try:
        spec = JudgeSpec(**{name: getattr(args, name) for name in MARGIN_JUDGE_SETTINGS})
        return spec, load_margin_prompt(args.margin_prompt)
    except MarginPromptError as exc:
        raise Refused(str(exc)) from None
    except ValidationError as exc:
        raise Refused(_problems(exc)) from None


def _problems(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )


def _run_margin_flow(spec: MarginSpec, quiet: bool) -> int:
    from stepedit_flows.margin_set import margin_set, summary_text

    with flow_session(spec.job, quiet) as log:
        summary = margin_set(spec)
    print(summary_text(summary), end="")
    print(f"log: {log}")
    return 0


def cmd_preferences(args: argparse.Namespace) -> int:
    from stepedit_core.audit import split_run_uri
    from stepedit_core.dataset.preferences import build_preferences

    out, run_id = split_run_uri(args.run)
    summary = build_preferences(out, run_id, args.out)
    sources = ", ".join(f"{k}: {n}" for k, n in summary["by_source"].items()) or "none"
    print(
        f"{summary['pairs']} preference pairs over {summary['clips']} clips of {run_id} "
        f"({sources}); {summary['with_tokens']} with tokens"
    )
    if summary["pairs"] == 0:
        print(
            "stepedit: no pairs: the run needs verdicts (`stepedit judge RUN`) or ratings "
            "(`stepedit dataset import-ratings RUN FILE`) that prefer one round over another",
            file=sys.stderr,
        )
    print(f"pairs: {summary['preferences']}")
    print(f"data card: {summary['card']}")
    return 0


def cmd_import_ratings(args: argparse.Namespace) -> int:
    import fsspec

    from stepedit_core.audit import split_run_uri
    from stepedit_core.dataset.ratings import import_ratings

    out, run_id = split_run_uri(args.run)
    try:
        with fsspec.open(args.file, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, OSError) as exc:
        raise Refused(f"ratings file {args.file}: {exc}") from None
    outcome = import_ratings(out, run_id, data, args.file)
    for problem in outcome.rejected:
        print(f"stepedit: rating not imported: {problem}", file=sys.stderr)
    if outcome.already:
        print(f"{args.file} was imported before ({outcome.imported} ratings): nothing changed")
    else:
        print(f"imported {outcome.imported} ratings into {outcome.path}")
    return 1 if outcome.rejected else 0
