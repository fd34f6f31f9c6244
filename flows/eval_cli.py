"""`stepedit eval ...`: the model's benchmark protocol on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from stepedit_core.catalog.access import default_root, resolve
from stepedit_core.evaluation.benchmark import TASKS, BenchmarkError, import_benchmark
from stepedit_flows.judge_cli import add_eval_run_parser, cmd_eval_run


def _tasks_arg(text: str) -> tuple[str, ...]:
    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(TASKS)}, got {text!r}"
        )
    return tasks


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    evaluation = sub.add_parser(
        "eval", help="the model's benchmark protocol: import it, edit, then judge"
    )
    commands = evaluation.add_subparsers(dest="eval_command", required=True)
    imported = commands.add_parser(
        "import-benchmark",
        help="turn a Step-Audio-Edit-Benchmark checkout into a manifest",
        description="One manifest row per line of the benchmark's emotion, style and "
        "paralinguistic files: the speaker's prompt clip as audio_uri, its transcript as text, "
        "the line to speak as target_text, eval_task and eval_label for judging.",
    )
    imported.add_argument("dir", metavar="DIR", help="the benchmark checkout (holds data/)")
    imported.add_argument("--out", required=True, metavar="M.parquet", help="manifest to write")
    imported.add_argument(
        "--tasks", type=_tasks_arg, default=TASKS, help=f"subset of {','.join(TASKS)} (all)"
    )
    imported.add_argument(
        "--per-label",
        type=_positive_int,
        default=None,
        metavar="N",
        help="keep the first N lines per task, language, speaker and label (a trial run)",
    )
    imported.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="write the usable lines and list the others (default: refuse, write nothing)",
    )
    add_eval_run_parser(commands)


def cmd_import_benchmark(args: argparse.Namespace) -> int:
    try:
        imported = import_benchmark(
            args.dir, args.out, args.tasks, args.per_label, args.skip_bad_lines
        )
    except BenchmarkError as exc:
        hint = "; --skip-bad-lines writes the usable lines" if "unusable line" in str(exc) else ""
        raise BenchmarkError(f"{exc}{hint}") from None
    for problem in imported.problems:
        print(f"skipped {problem}")
    counts = ", ".join(f"{task} {n}" for task, n in imported.counts().items())
    print(f"{args.out}: {len(imported.rows)} row(s) ({counts})")
    checkout = resolve(str(Path(args.dir).resolve()))
    if not checkout.within(resolve(default_root(args.out))):
        print(
            f"the prompt clips are outside the manifest's folder: run with --allow-root {args.dir}"
        )
    return 0


EVAL_COMMANDS = {"import-benchmark": cmd_import_benchmark, "run": cmd_eval_run}


def cmd_eval(args: argparse.Namespace) -> int:
    return EVAL_COMMANDS[args.eval_command](args)
