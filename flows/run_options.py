"""The run's options on the command line (`run`, `demo`, `validate`, `deploy`, `dataset`) and the
JobSpec built from them. The command modules import it; it imports no command module but
judge_cli's `judge_spec`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from stepedit_core.edits import EditError, EditSpec, parse_edit
from stepedit_core.engines import DEFAULT_ENGINE, ENGINES
from stepedit_core.executors import EXECUTORS
from stepedit_core.job import MAX_ITERATIONS, JobSpec
from stepedit_core.segments import DEFAULT_SEGMENT_S
from stepedit_core.sources import (
    DECODED_FACTOR,
    DEFAULT_MAX_MB,
    DEFAULT_READ_TIMEOUT_S,
)
from stepedit_flows.exit_statuses import Refused
from stepedit_flows.judge_cli import judge_spec


def key_value(kind: type) -> callable:
    def parse(text: str) -> tuple[str, float | int | str]:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected STAGE=VALUE, got {text!r}")
        try:
            return name, kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a {kind.__name__}") from None

    return parse


def edit_arg(text: str) -> EditSpec:
    try:
        return parse_edit(text)
    except EditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _storage_options_arg(text: str) -> dict:
    """JSON text, or @FILE holding it (keeps secrets off the command line, which other users
    of the machine can see)."""
    from stepedit_core.access import parse_storage_options

    try:
        if text.startswith("@"):
            text = Path(text[1:]).read_text()
        return parse_storage_options(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_access_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-root",
        action="append",
        default=[],
        metavar="URI",
        help="folder or bucket prefix audio may be read from; repeatable (default: the "
        "manifest's folder). Rows whose audio_uri resolves elsewhere fail as uri_not_allowed",
    )
    p.add_argument(
        "--storage-options",
        type=_storage_options_arg,
        default=None,
        metavar="JSON|@FILE",
        help="fsspec storage options for object storage (e.g. key, secret, "
        "client_kwargs.endpoint_url), used for manifest, audio and outputs; never recorded",
    )
    p.add_argument(
        "--max-input-mb",
        type=int,
        default=DEFAULT_MAX_MB,
        metavar="MB",
        help=f"largest source file read (default {DEFAULT_MAX_MB}); a larger one, or one whose "
        f"header claims more than {DECODED_FACTOR}x that decoded, fails as file_too_large",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT_S,
        metavar="SECONDS",
        help="longest read of one source file or object (default "
        f"{DEFAULT_READ_TIMEOUT_S:g}); a slower one fails as read_timeout",
    )


def add_job_options(p: argparse.ArgumentParser, edit_required: bool = False) -> None:
    p.add_argument(
        "--edit",
        action="append",
        default=[],
        type=edit_arg,
        metavar="TYPE[=OPTION]",
        required=edit_required,
        help="edit applied in every round; repeat to chain edits within a round "
        "(types, options and engines: see the epilog)",
    )
    p.add_argument("--engine", default=DEFAULT_ENGINE, help=f"one of: {', '.join(ENGINES)}")
    p.add_argument(
        "--models",
        dest="models_dir",
        metavar="DIR",
        help="folder holding Step-Audio-Tokenizer/ and Step-Audio-EditX/",
    )
    p.add_argument(
        "--stepaudio-src",
        metavar="DIR",
        help="checkout of the public Step-Audio-EditX repository (tokenizer/decoder "
        "code); default: $STEPEDIT_STEPAUDIO_SRC",
    )
    p.add_argument(
        "--asr-models",
        metavar="DIR",
        help="local faster-whisper (CTranslate2) model folder: word timings for the fillers "
        "edit, transcripts for rows without text, and the `wer` QC metric (pip install "
        "'stepedit[asr]')",
    )
    p.add_argument(
        "--word-timings",
        nargs="?",
        const="auto",
        choices=("auto", "asr"),
        default=None,
        help="record the words of every round's output (words_json): auto (the default when "
        "given) aligns the text, or uses --asr-models where a row has none; asr: the ASR's own "
        "word times. On by itself with --asr-models or --edit fillers",
    )
    p.add_argument(
        "--stage-python",
        action="append",
        default=[],
        type=key_value(str),
        metavar="STAGE=PYTHON",
        help="run a stage's Ray workers with this interpreter (its own environment)",
    )
    p.add_argument(
        "--stage-image",
        action="append",
        default=[],
        type=key_value(str),
        metavar="STAGE=IMAGE",
        help="run a stage's Ray workers in this container image",
    )
    add_access_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    add_job_options(p)
    p.add_argument(
        "--iterations",
        type=int,
        default=1,
        help=f"editing rounds, 1..{MAX_ITERATIONS}; round k edits round k-1's output "
        "(the outputs call a round an iteration)",
    )
    p.add_argument("--executor", choices=EXECUTORS, default="ray")
    p.add_argument("--shard-size", type=int, default=2000, help="clips per Prefect task")
    p.add_argument(
        "--prompt-mode",
        choices=("chain", "fixed"),
        default="chain",
        help="voice prompt of round k: the previous round's output, or the original",
    )
    p.add_argument("--seed", type=int, default=0, help="base seed; each clip derives its own")
    p.add_argument("--llm-backend", choices=("transformers", "vllm"), default="transformers")
    p.add_argument(
        "--vad-max-pause",
        type=float,
        default=0.3,
        help="seconds a pause may last after the vad edit (signal engine)",
    )
    p.add_argument(
        "--gpu",
        action="append",
        default=[],
        type=key_value(float),
        metavar="STAGE=FRACTION",
        help="GPU fraction per actor of a stage",
    )
    p.add_argument(
        "--batch-size",
        action="append",
        default=[],
        type=key_value(int),
        metavar="STAGE=N",
        help="batch size of a stage",
    )
    p.add_argument(
        "--qc",
        choices=("acx", "r128", "netflix", "none"),
        default="none",
        help="delivery profile every round is checked against (pass/fail with reasons); "
        "cheap QC metrics are measured in any case",
    )
    p.add_argument(
        "--qc-heavy",
        action="store_true",
        help="also DNSMOS and speaker similarity to the source (pip install 'stepedit[qc-heavy]')",
    )
    p.add_argument(
        "--qc-max-wer",
        type=float,
        default=None,
        metavar="RATE",
        help="fail a round whose word error rate against its text is over RATE (e.g. 0.2; "
        "needs --asr-models); --select best never delivers such a round",
    )
    p.add_argument(
        "--segment-seconds",
        type=float,
        default=DEFAULT_SEGMENT_S,
        metavar="S",
        help="step-audio-editx: a clip longer than S seconds is edited in segments cut in its "
        "pauses and stitched back (text per segment from a `segments` column or "
        f"--asr-models; default {DEFAULT_SEGMENT_S:g}, at most 30)",
    )
    p.add_argument(
        "--select",
        choices=("last", "best"),
        default="last",
        help="round to deliver: the last, or the best round that passes --qc (highest speaker "
        "similarity, else smallest timbre drift, else closest to the profile's targets)",
    )
    p.add_argument(
        "--deliver-format",
        choices=("flac", "wav", "mp3"),
        default="flac",
        help="format of the delivered files: FLAC (24-bit, the round's file), WAV (24-bit) or "
        "MP3 (constant bitrate, 44.1 kHz; with --qc acx mono, and QC checks the encoded file)",
    )
    p.add_argument(
        "--mp3-bitrate",
        type=int,
        choices=(128, 160, 192, 224, 256, 320),
        default=192,
        help="MP3 bitrate, kbps CBR (ACX: 192 or more)",
    )
    p.add_argument(
        "--report",
        choices=("index", "all", "none"),
        default="index",
        help="review page RUN/report/index.html: players and spectrograms for the clips on "
        "index.html (first page and every failure), for every clip, or no page",
    )
    p.add_argument("--ray-address", help="Ray cluster to join (default: $RAY_ADDRESS or local)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start the run id afresh (by default a run id resumes where it stopped, and a "
        "finished one does nothing); removes only what the run wrote, after the job is "
        "checked, and never touches a folder that is not a stepedit run",
    )
    p.add_argument(
        "--incremental",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="edit only rows no earlier run under --out finished with the same audio bytes, "
        "edit, engine version and seed; the output manifest points the others at the earlier "
        "outputs (column reused_from_run). Default: off for `run`, on for `deploy`",
    )
    talk = p.add_mutually_exclusive_group()
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
    try:
        return JobSpec(
            manifest_uri=manifest,
            out=args.out,
            run_id=args.run_id,
            edits=args.edit,
            iterations=args.iterations,
            engine=args.engine,
            executor=args.executor,
            shard_size=args.shard_size,
            prompt_mode=args.prompt_mode,
            seed=args.seed,
            models_dir=args.models_dir,
            stepaudio_src=args.stepaudio_src,
            llm_backend=args.llm_backend,
            vad_max_pause=args.vad_max_pause,
            asr_models=args.asr_models,
            word_timings=args.word_timings,
            qc_max_wer=args.qc_max_wer,
            segment_seconds=args.segment_seconds,
            gpus=dict(args.gpu),
            batch_sizes=dict(args.batch_size),
            ray_address=args.ray_address,
            overwrite=args.overwrite,
            qc=args.qc,
            qc_heavy=args.qc_heavy,
            select=args.select,
            deliver_format=getattr(args, "deliver_format", "flac"),
            mp3_bitrate=getattr(args, "mp3_bitrate", 192),
            report=args.report,
            incremental=getattr(args, "incremental", False),
            stage_python=dict(args.stage_python),
            stage_images=dict(args.stage_image),
            allow_roots=args.allow_root,
            storage_options=args.storage_options,
            judge=judge_spec(args),
            until_judged=getattr(args, "until_judged", False),
            max_input_mb=args.max_input_mb,
            read_timeout_s=args.read_timeout,
        )
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise Refused(problems) from None


def _problem(error: dict) -> str:
    """One validation error as "field: message" (a check across fields names none)."""
    where = ".".join(str(p) for p in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
