"""`stepedit deploy` and `stepedit deployments`: scheduled edit jobs as Prefect deployments.

A deployment runs `scheduled_edit_catalog` (stepedit_flows.scheduled) from the installed package,
so a worker needs stepedit installed and nothing else: no code download, no pull steps. Its
parameters are the run-id prefix (`name`) and the JobSpec fields (`job`), checked here with the
same checks that refuse a `stepedit run` before anything is registered.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from stepedit_flows.exit_statuses import Refused
from stepedit_flows.run_names import (
    ARTIFACT_PREFIX,
    FLOW_NAME,
    MAX_NAME_LENGTH,
    check_name,
    stamped_run_id,
)
from stepedit_flows.run_options import job_from_args

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

ENTRYPOINT = "stepedit_flows.scheduled.scheduled_edit_catalog"
DEFAULT_WORK_POOL = "stepedit"
TAGS = ["stepedit"]
# Run states that say how the last run went (scheduled and pending ones have not run yet).
_RAN = ("RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _refused(message: str) -> Exception:
    """The command line's refusal (exit status 2)."""
    return Refused(message)


def add_deploy_options(p: argparse.ArgumentParser) -> None:
    """Options of `stepedit deploy` besides the job options `stepedit run` has."""
    p.add_argument(
        "--name",
        required=True,
        help=f"deployment name and run-id prefix (1-{MAX_NAME_LENGTH} of [A-Za-z0-9._-])",
    )
    p.add_argument("--cron", required=True, help='schedule, e.g. "0 2 * * *" (02:00 daily)')
    p.add_argument("--timezone", default="UTC", help="time zone of the cron schedule")
    p.add_argument("--manifest", required=True, help="Parquet manifest: local path or fsspec URI")
    p.add_argument("--out", required=True, help="output root: local path or fsspec URI")
    p.add_argument(
        "--work-pool",
        default=DEFAULT_WORK_POOL,
        help=f"Prefect work pool whose workers run it (default: {DEFAULT_WORK_POOL})",
    )


def add_list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        # Without it Prefect would register into a temporary server that dies with this command.
        raise _refused(
            "PREFECT_API_URL is not set: point it at the Prefect server that should hold the "
            "deployment, e.g. http://127.0.0.1:4200/api (infra/prefect_server.sh starts one)"
        )
    return url


@contextmanager
def _server_errors(url: str) -> Iterator[None]:
    """An unreachable server or a request it rejects refuses the command (exit status 2)."""
    import httpx

    try:
        yield
    except httpx.HTTPError as exc:
        raise _refused(f"Prefect server {url}: {exc}") from None


def job_parameters(args: argparse.Namespace) -> dict[str, Any]:
    """The deployment's `job` parameter, after the checks that would refuse a run."""
    from stepedit_core.foundation.store import RunStore
    from stepedit_core.lifecycle.checks import check_inputs

    if getattr(args, "overwrite", False):
        raise _refused("--overwrite does not apply: every scheduled run gets a new run id")
    try:
        args.run_id = stamped_run_id(args.name, datetime.now(timezone.utc))
    except ValueError as exc:
        raise _refused(str(exc)) from None
    job = job_from_args(args, args.manifest)
    # No run folder exists yet: the write probe goes to the output root the runs will write under.
    out_root = RunStore(job.out, "")
    check_inputs(job.manifest_uri, job.edits, job.make_engine(), out_root)
    from stepedit_flows.scheduled import scheduled_job  # imports Prefect: not at CLI start

    # what the deployment stores is what its runs will read back (ScheduledJob)
    return scheduled_job(job.model_dump(mode="json", exclude={"run_id"})).model_dump(mode="json")


def _cron(expression: str, tz: str) -> Any:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        return CronSchedule(cron=expression, timezone=tz)
    except ValueError as exc:
        raise _refused(f"bad schedule {expression!r} ({tz}): {exc}") from None


def register(
    client: SyncPrefectClient,
    name: str,
    cron: str,
    tz: str,
    job: dict[str, Any],
    work_pool: str,
) -> str:
    """Create or update the deployment `scheduled_edit_catalog/NAME`; returns its id."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.utilities.callables import parameter_schema

    from stepedit_flows.scheduled import scheduled_edit_catalog

    try:
        check_name(name)
    except ValueError as exc:
        raise _refused(str(exc)) from None
    schedule = _cron(cron, tz)
    try:
        client.read_work_pool(work_pool)
    except ObjectNotFound:
        raise _refused(
            f"work pool {work_pool!r} does not exist on the server; create it with "
            f"`prefect work-pool create {work_pool} --type process` and start a worker on it"
        ) from None
    flow_id = client.create_flow_from_name(FLOW_NAME)
    deployment_id = client.create_deployment(
        flow_id=flow_id,
        name=name,
        entrypoint=ENTRYPOINT,
        work_pool_name=work_pool,
        parameters={"name": name, "job": job},
        parameter_openapi_schema=parameter_schema(scheduled_edit_catalog).model_dump(),
        enforce_parameter_schema=True,
        schedules=[DeploymentScheduleCreate(schedule=schedule, active=True)],
        pull_steps=[],  # the flow is imported from the installed package
        tags=TAGS,
        description=f"stepedit: edit {job['manifest_uri']} into {job['out']} on {cron} ({tz})",
    )
    return str(deployment_id)


def cmd_deploy(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    url = _api_url()
    job = job_parameters(args)
    _cron(args.cron, args.timezone)  # refuse a bad schedule before contacting the server
    with _server_errors(url), get_client(sync_client=True) as client:
        deployment_id = register(client, args.name, args.cron, args.timezone, job, args.work_pool)
    print(
        f"deployment {FLOW_NAME}/{args.name} ({deployment_id}) on {url}: "
        f'cron "{args.cron}" ({args.timezone}), work pool {args.work_pool}'
    )
    print(f"runs write {job['out']}/{args.name}-<scheduled time, UTC>/")
    return 0


@dataclass
class LastRun:
    name: str
    state: str
    start_time: str | None
    message: str | None
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeploymentInfo:
    name: str
    id: str
    work_pool: str | None
    paused: bool
    schedules: list[dict[str, Any]]
    next_run: str | None
    last_run: LastRun | None
    parameters: dict[str, Any]


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat() if moment else None


def _first_run(
    client: SyncPrefectClient, deployment_id: Any, states: list[str], latest_first: bool
) -> Any:
    """The deployment's flow run in one of `states` that started last (or is due first)."""
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
        ),
        sort=FlowRunSort.START_TIME_DESC if latest_first else FlowRunSort.EXPECTED_START_TIME_ASC,
        limit=1,
    )
    return runs[0] if runs else None


def _last_run(client: SyncPrefectClient, deployment_id: Any) -> LastRun | None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    run = _first_run(client, deployment_id, list(_RAN), latest_first=True)
    if run is None:
        return None
    counts: dict[str, Any] = {}
    # The counts table the run published (absent when it was refused or crashed before).
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])),
        sort=ArtifactSort.CREATED_DESC,
    )
    for artifact in artifacts:
        if artifact.type == "table" and (artifact.key or "").startswith(ARTIFACT_PREFIX):
            data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            counts = dict(data[0]) if data else {}
            break
    return LastRun(
        name=run.name,
        state=run.state.name if run.state else "unknown",
        start_time=_iso(run.start_time),
        message=run.state.message if run.state else None,
        counts=counts,
    )


def _next_run(client: SyncPrefectClient, deployment_id: Any) -> str | None:
    run = _first_run(client, deployment_id, ["SCHEDULED"], latest_first=False)
    return _iso(run.expected_start_time) if run is not None else None


def list_deployments(client: SyncPrefectClient) -> list[DeploymentInfo]:
    """Every deployment of the stepedit scheduled flow, with its schedules and last run."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deployments = client.read_deployments(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME]))
    )
    infos = []
    for d in sorted(deployments, key=lambda d: d.name):
        schedules = [
            {
                "cron": getattr(s.schedule, "cron", None),
                "timezone": getattr(s.schedule, "timezone", None),
                "active": s.active,
            }
            for s in d.schedules
        ]
        infos.append(
            DeploymentInfo(
                name=d.name,
                id=str(d.id),
                work_pool=d.work_pool_name,
                paused=bool(d.paused),
                schedules=schedules,
                next_run=_next_run(client, d.id),
                last_run=_last_run(client, d.id),
                parameters=d.parameters,
            )
        )
    return infos


def _describe(info: DeploymentInfo) -> list[str]:
    crons = ", ".join(
        f'"{s["cron"]}" ({s["timezone"]}){"" if s["active"] else " inactive"}'
        for s in info.schedules
    )
    lines = [
        f"{info.name}: {crons or 'no schedule'}{' PAUSED' if info.paused else ''}, "
        f"work pool {info.work_pool}, next run {info.next_run or '-'}"
    ]
    last = info.last_run
    if last is None:
        lines.append("  last run: none yet")
        return lines
    lines.append(f"  last run {last.name}: {last.state} at {last.start_time or '-'}")
    if last.counts:
        c = last.counts
        lines.append(
            f"  {c['rows']} rows, {c['ok']} ok, {c['failed']} failed"
            + (f" ({c['errors']})" if c.get("errors") else "")
        )
    elif last.message:
        lines.append(f"  {last.message}")
    return lines


def cmd_deployments(args: argparse.Namespace) -> int:
    from prefect.client.orchestration import get_client

    url = _api_url()
    with _server_errors(url), get_client(sync_client=True) as client:
        infos = list_deployments(client)
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2, default=str))
        return 0
    if not infos:
        print(f"no {FLOW_NAME} deployments (create one with `stepedit deploy`)")
    for info in infos:
        print("\n".join(_describe(info)))
    return 0


__all__ = [
    "ENTRYPOINT",
    "DeploymentInfo",
    "LastRun",
    "add_deploy_options",
    "add_list_options",
    "cmd_deploy",
    "cmd_deployments",
    "job_parameters",
    "list_deployments",
    "register",
]
