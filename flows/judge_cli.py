"""`stepedit judge` and the judge options of `stepedit run`.

    stepedit judge RUN --judge gemini --model gemini-2.5-pro --key-env GEMINI_API_KEY
    stepedit run M --out runs/ --run-id r1 --edit emotion=happy --iterations 3 \\
        --judge openai --endpoint http://judge:8000/v1 --model qwen2-audio --until-judged
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from stepedit_core.foundation.failures import RunRefused
from stepedit_core.judges.http import MissingKey
from stepedit_core.judges.prompts import PromptError, Prompts
from stepedit_core.judges.spec import JudgeSpec
from stepedit_core.lifecycle.job import JobSpec
from stepedit_flows.run_command import (
    check_before_run,
    print_finished,
    run_flow,
    use_local_server,
)
from stepedit_flows.setting_options import (
    add_setting_options,
    setting_named,
    settings_from_args,
)

EVAL_RUN_SETTINGS = (
    "engine",
    "models_dir",
    "stepaudio_src",
    "iterations",
    "executor",
    "seed",
    "allow_roots",
    "overwrite",
)


def _prompts_file(path: str) -> dict[str, str]:
    """--prompts FILE: the templates themselves go into the job (workers never read the file)."""
    try:
        return Prompts.load(path).templates
    except PromptError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


JUDGE_PARSERS = {"prompts": _prompts_file}


def add_judge_options(
    p: argparse.ArgumentParser,
    required: bool = False,
    only: Iterable[str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> None:
    """The judge's options, as its fields declare them (judges/spec.py), under "Judging"."""
    add_setting_options(
        p,
        JudgeSpec,
        JUDGE_PARSERS,
        only=only,
        required=("kind",) if required else (),
        title="Judging",
        overrides=overrides,
    )


def judge_spec(args: argparse.Namespace) -> JudgeSpec | None:
    """The job's judge from the command line (None without --judge)."""
    values = settings_from_args(args, JudgeSpec)
    if values.get("kind") is None:
        return None
    try:
        spec = JudgeSpec(**values)
        spec.judge(cache_root=None)  # refuses now when the key's variable is not set
        return spec
    except MissingKey as exc:
        raise RunRefused(str(exc)) from None
    except ValidationError as exc:
        raise RunRefused(
            "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        ) from None


def add_judge_parser(sub: argparse._SubParsersAction) -> None:
    judge = sub.add_parser(
        "judge", help="judge a finished run's rounds; writes RUN/eval/accuracy.parquet"
    )
    judge.add_argument("run", metavar="RUN_DIR_OR_URI")
    add_judge_options(judge, required=True)
    add_setting_options(judge, JobSpec, only=("executor", "ray_address"))


def cmd_judge(args: argparse.Namespace) -> int:
    from stepedit_core.audit import split_run_uri
    from stepedit_core.executors import make_executor
    from stepedit_core.foundation.store import RunStore
    from stepedit_core.judges.judging import judge_run, read_verdicts
    from stepedit_core.report import build_report

    spec = judge_spec(args)
    if spec is None:  # argparse requires --judge here
        raise RunRefused("--judge is required")
    out, run_id = split_run_uri(args.run)
    judge = spec.judge(cache_root=out)
    executor = make_executor(args.executor, getattr(args, "ray_address", None))

    def progress(done: int, total: int) -> None:
        print(f"judging {run_id}: {done}/{total} parts of iterations/", file=sys.stderr)

    outcome = judge_run(out, run_id, judge, executor, progress)
    store = RunStore(out, run_id)
    page = build_report(out, run_id, media=setting_named(JobSpec, "report").default)
    failures = Counter(
        v["error_code"] for v in read_verdicts(store, outcome.judge_id) if v["error_code"]
    )
    for code, count in sorted(failures.items()):
        print(f"stepedit: {count} verdicts failed as {code}", file=sys.stderr)
    for note in outcome.skipped_rows:
        print(f"stepedit: skipped {note}", file=sys.stderr)
    print(
        f"judged {run_id} with {judge.kind} ({judge.model}): {outcome.verdicts} verdicts, "
        f"{outcome.judged_now} judged now ({outcome.requests_saved} from the cache), "
        f"{outcome.failed} failed, {outcome.parts_resumed} parts already judged"
    )
    print(store.read_bytes(store.eval_file("accuracy.md")).decode(), end="")
    print(f"accuracy: {store.uri(store.eval_file('accuracy.parquet'))}")
    print(f"review page: {page}")
    return 0


def add_eval_run_parser(commands: argparse._SubParsersAction) -> None:
    """`stepedit eval run`, added to the `eval` group (flows/eval_cli.py)."""
    run = commands.add_parser(
        "run", help="round 0 (clone or another system's audio), N editing rounds, then judge"
    )
    run.add_argument("manifest", help="benchmark manifest (stepedit eval import-benchmark)")
    run.add_argument("--out", default="runs", help="output root (default: runs)")
    run.add_argument("--run-id", default=None, help="default: eval-<manifest name>")
    run.add_argument(
        "--mode",
        choices=("chain", "prompt-fixed"),
        default="chain",
        help="voice prompt of each round: the previous round's audio, or the round-0 audio",
    )
    run.add_argument(
        "--post-process",
        metavar="COLUMN",
        default=None,
        help="round 0 is another system's audio, from this manifest column (no clone)",
    )
    # the job settings the protocol's runs take, as `stepedit run` declares them; the
    # protocol edits with the model engine, three rounds by default
    add_setting_options(run, JobSpec, only=EVAL_RUN_SETTINGS)
    run.set_defaults(engine="step-audio-editx", iterations=3)
    run.add_argument("--quiet", action="store_true")
    add_judge_options(run, required=True)


def cmd_eval_run(args: argparse.Namespace) -> int:
    import posixpath

    from stepedit_core.catalog.access import default_root
    from stepedit_core.judges.protocol import MODES, protocol_jobs

    spec = judge_spec(args)
    if spec is None:
        raise RunRefused("--judge is required")
    use_local_server()
    stem = posixpath.basename(args.manifest.rstrip("/")).rsplit(".", 1)[0]
    run_id = args.run_id or f"eval-{stem}"
    jobs = protocol_jobs(args.manifest, args.out, run_id, args.iterations, args.post_process)
    # the derived manifests live under OUT/_eval: audio stays readable where the input's was
    roots = args.allow_roots or [default_root(args.manifest)]
    for job in jobs:
        try:
            spec_job = JobSpec(
                manifest_uri=job.manifest_uri,
                out=args.out,
                run_id=job.run_id,
                iterations=job.iterations,
                engine=args.engine,
                executor=args.executor,
                prompt_mode=MODES[args.mode],
                seed=args.seed,
                models_dir=args.models_dir,
                stepaudio_src=args.stepaudio_src,
                overwrite=args.overwrite,
                allow_roots=roots,
            )
        except ValidationError as exc:
            raise RunRefused(
                "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            ) from None
        print(f"{job.run_id}: {job.rows} rows, {job.iterations} editing round(s) after round 0")
        if check_before_run(spec_job):
            run_flow(spec_job, args.quiet)
        else:
            print_finished(spec_job)
    for job in jobs:
        args.run = posixpath.join(args.out, job.run_id)
        cmd_judge(args)
    return 0
