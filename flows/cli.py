"""The `stepedit` command line.

exit status of run and demo:
  0    the run finished and every row is ok
  1    the run finished and some rows failed (the summary says how many; their failure
       records are the rows with status 'failed' in the output manifest)
  2    refused before any work (bad manifest, unknown engine or edit, engine not ready,
       every row refused at plan time for one reason, run id held by another attempt, an
       output folder that is not a run or holds the run's inputs)
  3    crashed (the traceback is printed)
  4    this attempt lost the run id's lease to another attempt and stopped committing
  130/143  stopped by Ctrl-C/SIGTERM (where it stopped: OUT/RUN_ID/_work/stopped.json)
  141  the reader of the output went away (`| head`)
verify and audit: 0 intact, 1 a mismatch (each one named) or no such clip."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from stepedit_core.catalog.access import AllowedRoots
from stepedit_core.catalog.segments import DEFAULT_SEGMENT_S, NoPause, plan_file
from stepedit_core.engines import ENGINES, UnknownEngine, make_engine
from stepedit_core.foundation.edits import EditError, parse_edit, vocabulary_help
from stepedit_core.foundation.failures import ItemFailure, RunRefused
from stepedit_core.lifecycle.job import JobSpec
from stepedit_core.lifecycle.lease import LeaseLost
from stepedit_core.lifecycle.stage_envs import StageEnvError
from stepedit_core.lifecycle.stops import RunStopped
from stepedit_flows import keeper, local_server
from stepedit_flows.dataset_cli import add_dataset_commands, cmd_dataset
from stepedit_flows.deploy import add_deploy_options, add_list_options, cmd_deploy, cmd_deployments
from stepedit_flows.eval_cli import add_eval_parser, cmd_eval
from stepedit_flows.exit_statuses import CLOSED_PIPE, CRASHED, REFUSED, Refused, exit_status
from stepedit_flows.judge_cli import add_judge_parser, cmd_judge
from stepedit_flows.ray_cli import add_ray_parser, cmd_ray
from stepedit_flows.run_command import (
    check_before_run,
    print_finished,
    refuse_when_every_row_would_be,
    run_flow,
    stop_local_ray,
    use_local_server,
)
from stepedit_flows.run_logs import console_logging
from stepedit_flows.run_options import add_run_options, job_from_args
from stepedit_flows.setting_options import choices_of, setting_named

EXIT_STATUSES = __doc__.split("\n\n", 1)[1].split("verify and audit")[0].rstrip()

# Batch machines are often offline: Prefect's temporary server must not try to send telemetry
# (its heartbeat also contends for the local SQLite database). Users can still turn it on.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

__all__ = ["EXIT_STATUSES", "Refused", "build_parser", "exit_status", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepedit",
        description=__doc__,
        epilog="edits (--edit TYPE[=OPTION]):\n" + vocabulary_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="edit every clip of a manifest",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("manifest", help="Parquet manifest: local path or fsspec URI (s3://...)")
    run.add_argument("--out", required=True, help="output root: local path or fsspec URI")
    run.add_argument("--run-id", required=True)
    add_run_options(run)

    demo = sub.add_parser(
        "demo",
        help="build a demo catalog from the shipped clips and run it",
        epilog=EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", default="runs", help="output root (default: runs)")
    demo.add_argument("--run-id", default="demo")
    add_run_options(demo)
    demo.set_defaults(iterations=2, overwrite=True)

    engines = sub.add_parser("engines", help="list engines, their stages and supported edits")
    engines.add_argument("--json", action="store_true")

    prompt = sub.add_parser("prompt", help="print the exact instruction text an edit sends")
    prompt.add_argument("--engine", default="step-audio-editx")
    prompt.add_argument("--edit", required=True, metavar="TYPE[=OPTION]")
    prompt.add_argument("--text", default="")
    prompt.add_argument("--target-text", default=None)
    prompt.add_argument("--ids", action="store_true", help="print the LLM's input ids as JSON")
    prompt.add_argument("--models", dest="models_dir", default=None, metavar="DIR")
    prompt.add_argument("--audio-codes", default=None, metavar="C1,C2,...")
    prompt.add_argument("--speaker", default=None, help="clone: the voice prompt's speaker name")

    segments = sub.add_parser(
        "segments", help="print where a long clip would be split for the model (pauses only)"
    )
    segments.add_argument("audio", metavar="AUDIO_PATH_OR_URI")
    segments.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_SEGMENT_S,
        help=f"longest segment, seconds (default {DEFAULT_SEGMENT_S:g})",
    )
    segments.add_argument("--json", action="store_true")

    validate = sub.add_parser(
        "validate",
        help="check a manifest and model folders as `run` would with the same options, run "
        "nothing (exit 2 where run would be refused)",
    )
    validate.add_argument("manifest")
    add_run_options(validate)
    validate.set_defaults(out=".", run_id="validate")  # the job needs them; nothing is written

    deploy = sub.add_parser("deploy", help="schedule a job as a Prefect deployment (cron)")
    add_deploy_options(deploy)
    add_run_options(deploy)
    deploy.set_defaults(incremental=True)  # a schedule re-runs a catalog: redo only what changed

    server = sub.add_parser(
        "server",
        help="the local Prefect server runs start and share (start: one that runs until "
        "stopped; stop; status: exit 1 when none runs)",
    )
    server.add_argument("action", choices=("start", "stop", "status"))
    add_ray_parser(sub)

    deployments = sub.add_parser("deployments", help="list scheduled jobs and their last runs")
    add_list_options(deployments)

    audit = sub.add_parser("audit", help="print one clip's record chain, source to delivered file")
    audit.add_argument("run", metavar="RUN_DIR_OR_URI")
    audit.add_argument("clip_id")
    audit.add_argument("--json", action="store_true")
    verify = sub.add_parser("verify", help="re-hash a run's records and audio (exit 1: mismatch)")
    verify.add_argument("run", metavar="RUN_DIR_OR_URI")
    verify.add_argument("--json", action="store_true")
    verify.add_argument(
        "--sources", action="store_true", help="also re-hash each clip's source file"
    )
    report = sub.add_parser("report", help="write the run's review page, RUN/report/index.html")
    report.add_argument("run", metavar="RUN_DIR_OR_URI")
    report.add_argument("--page-size", type=int, default=200, help="clips per page")
    runs_write = setting_named(JobSpec, "report")  # the page a run writes (`run --report`)
    report.add_argument(
        "--media",
        choices=choices_of(runs_write),
        default=runs_write.default,
        help="players and spectrograms for every clip, only those on index.html, or none "
        f"(default: {runs_write.default}, as runs write it)",
    )
    add_judge_parser(sub)
    add_eval_parser(sub)
    add_dataset_commands(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from stepedit_core.catalog.access import storage_options_installed

    job = job_from_args(args, args.manifest)
    use_local_server()  # a server that is not up yet starts while the job is checked
    console_logging(args.verbose)
    with storage_options_installed(job.storage_options, job.storage_uris()):
        if not check_before_run(job):
            return print_finished(job)
        return run_flow(job, args.quiet)


def cmd_demo(args: argparse.Namespace) -> int:
    from stepedit_core.demo import demo_clips
    from stepedit_flows.demo import write_demo_manifest

    catalog = Path(args.out) / f"{args.run_id}-catalog"
    # --edit given: it applies to every clip; otherwise each clip gets the edit that suits it
    manifest = write_demo_manifest(catalog, with_edits=not args.edits)
    print(f"demo catalog: {manifest}")
    # the demo's clips ship inside the package, next to no manifest: allow their folder
    folders = sorted({str(Path(c["path"]).parent) for c in demo_clips()})
    args.allow_roots = args.allow_roots or folders
    job = job_from_args(args, str(manifest))
    use_local_server()
    console_logging(args.verbose)
    if not check_before_run(job):
        return print_finished(job)
    return run_flow(job, args.quiet)


def cmd_engines(args: argparse.Namespace) -> int:
    described = [make_engine(name).describe() for name in ENGINES]
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for info in described:
        print(f"{info['name']} {info['version']}: {info['description']}")
        for stage in info["stages"]:
            print(
                f"  stage {stage['name']}: batch {stage['batch_size']}, cpus {stage['cpus']}, "
                f"gpus {stage['gpus']}, memory {stage['memory_mb']} MB"
            )
        for edit, options in info["edits"].items():
            print(f"  edit {edit}: {options}")
        for name, setting in info["settings"].items():
            where = setting["flag"] or f"{name} (Python API)"
            text, default = setting["help"], setting["default"]
            if default is not None and "default" not in text:
                text += f" (default {default})"
            print(f"  setting {where}: {text}")
    return 0


def cmd_segments(args: argparse.Namespace) -> int:
    if args.max_seconds <= 0:
        raise Refused(f"--max-seconds must be more than 0, got {args.max_seconds:g}")
    try:
        pieces, rate = plan_file(args.audio, args.max_seconds)
    except (ItemFailure, NoPause) as exc:
        raise Refused(f"{args.audio}: {exc}") from None
    if args.json:
        print(json.dumps([p.seconds(rate) for p in pieces]))
        return 0
    for number, piece in enumerate(pieces, 1):
        times = piece.seconds(rate)
        length = times["end_s"] - times["start_s"]
        print(f"{number:4d}  {times['start_s']:10.3f}  {times['end_s']:10.3f}  {length:7.3f} s")
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    if args.engine != "step-audio-editx":
        raise Refused(
            f"engine {args.engine!r} sends no instruction text; only step-audio-editx has prompts"
        )
    from stepedit_core.engines.stepaudio.prompts import instruction_text

    try:
        spec = parse_edit(args.edit)
        if args.ids:
            from stepedit_core.engines.stepaudio.text_tokenizer import request_ids_report

            report = request_ids_report(
                args.models_dir, spec, args.text, args.target_text, args.audio_codes, args.speaker
            )
            print(json.dumps(report))
            return 0
        print(instruction_text(spec, args.text, args.target_text), end="")
    except (EditError, ValueError) as exc:
        raise Refused(str(exc)) from None
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from stepedit_core.catalog.access import storage_options_installed

    # the job `run` would build from the same options (no output is written)
    job = job_from_args(args, args.manifest)
    with storage_options_installed(job.storage_options, job.storage_uris()):
        return _validate(job)


def _validate(job: JobSpec) -> int:
    from stepedit_core.catalog.records import RowResult
    from stepedit_core.lifecycle.checks import check_inputs
    from stepedit_core.lifecycle.planning import check_rows
    from stepedit_core.lifecycle.rounds import model_stage_names
    from stepedit_core.lifecycle.stage_envs import check_stage_names, report, report_lines

    engine = job.make_engine()
    envs = job.stage_envs()
    check_stage_names(envs, model_stage_names(engine))
    check_inputs(job.manifest_uri, job.edits, engine)
    roots = AllowedRoots.for_manifest(job.manifest_uri, job.allow_roots)
    good, refused = 0, {}
    for planned in check_rows(
        job.manifest_uri, job.edits, engine, job.seed, roots, job.input_limits()
    ):
        if not isinstance(planned, RowResult):
            good += 1
        else:
            refused[planned.error_code] = refused.get(planned.error_code, 0) + 1
            print(f"  {planned.error}", file=sys.stderr)
    print(
        f"{job.manifest_uri}: {good} row(s) ready for engine {engine.name}, "
        f"{sum(refused.values())} would fail at plan time {refused or ''}".rstrip()
    )
    rows = report(model_stage_names(engine), envs)
    print("what runs each stage:")
    print("\n".join(report_lines(rows)))
    unusable = [f"stage {stage}: {problem}" for stage, _, _, found in rows for problem in found]
    if unusable:
        raise Refused("; ".join(unusable))
    if not good and len(refused) == 1:  # what `run` refuses whole
        refuse_when_every_row_would_be(job, engine)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from stepedit_core.audit import clip_history, format_history, split_run_uri

    history = clip_history(*split_run_uri(args.run), args.clip_id)
    if history is None:
        print(f"stepedit: no clip {args.clip_id!r} in {args.run}", file=sys.stderr)
        return 1
    print(json.dumps(history, indent=2, default=str) if args.json else format_history(history))
    return 0 if history["intact"] else 1


def cmd_verify(args: argparse.Namespace) -> int:
    from stepedit_core.audit import split_run_uri, verify_run

    result = verify_run(*split_run_uri(args.run), check_sources=args.sources)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.text(), end="")
    return 0 if result.intact else 1


def cmd_report(args: argparse.Namespace) -> int:
    from stepedit_core.audit import split_run_uri
    from stepedit_core.report import build_report

    page = build_report(*split_run_uri(args.run), page_size=args.page_size, media=args.media)
    print(f"review page: {page}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    """start: print the API URL runs will use; stop: 0 whether or not one ran; status: 1 when
    none runs."""
    home = keeper.prefect_home()
    if args.action == "start":
        try:
            state = local_server.start()
        except RuntimeError as exc:
            raise Refused(str(exc)) from None
        verb = "already running" if state.get("already_running") else "started"
        print(f"Prefect server {verb} at {state['api_url']} (pid {state['pid']}, home {home})")
        return 0
    if args.action == "stop":
        state = local_server.stop()
        print(f"Prefect server stopped (pid {state['pid']})" if state else "no server running")
        return 0
    state = local_server.running()
    if state is None:
        print(f"no server running for Prefect home {home}")
        return 1
    idle = float(state.get("idle_stop_s") or 0)
    lifetime = f"stops after {idle:g} s without a run" if idle else "runs until `server stop`"
    print(f"Prefect server at {state['api_url']} (pid {state['pid']}, home {home}; {lifetime})")
    return 0


COMMANDS = {
    "server": cmd_server,
    "ray": cmd_ray,
    "audit": cmd_audit,
    "verify": cmd_verify,
    "report": cmd_report,
    "run": cmd_run,
    "demo": cmd_demo,
    "engines": cmd_engines,
    "prompt": cmd_prompt,
    "segments": cmd_segments,
    "validate": cmd_validate,
    "deploy": cmd_deploy,
    "deployments": cmd_deployments,
    "judge": cmd_judge,
    "eval": cmd_eval,
    "dataset": cmd_dataset,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, not at exit: a closed pipe is then caught below
        return status
    except BrokenPipeError:
        # the reader went away (`stepedit audit ... | head`): end quietly, like other tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE
    except (RunRefused, UnknownEngine, StageEnvError) as exc:
        print(f"stepedit: error: {exc}", file=sys.stderr)
        return REFUSED
    except RunStopped as exc:
        print(f"stepedit: {exc.describe()}", file=sys.stderr)
        return exc.exit_status
    except LeaseLost as exc:
        print(f"stepedit: error: {exc}", file=sys.stderr)
        return LeaseLost.exit_status
    except Exception:  # noqa: BLE001 - a crash keeps its own status, apart from failed rows
        traceback.print_exc()
        print(f"stepedit: {args.command} crashed (exit status {CRASHED})", file=sys.stderr)
        return CRASHED


def entry_point() -> None:
    """The `stepedit` program: `main`, then a local Ray stopped all at once (Ray's exit hook
    stops its processes one by one), then exit without the interpreter's last collection of
    garbage, which walks every object torch, Prefect and Ray made (1-2 s after a run); the
    process ends right after, so nothing it would have freed is kept."""
    status = main()
    stop_local_ray()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
