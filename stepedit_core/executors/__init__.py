"""Executors run the same flat list of stages over work items: in-process or on Ray Data."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from stepedit_core.foundation.stages import Stage, WorkItem

EXECUTORS = ("ray", "local")


class Executor(Protocol):
    """Runs stages over items and hands every item back. An executor whose stages run in other
    processes also has `round_channel()`: a context manager giving the channel the round ends
    put their records into (lifecycle/round_handoff.py); without it the channel is in-process."""

    name: str

    def run(self, stages: list[Stage], items: Iterable[WorkItem]) -> Iterator[WorkItem]: ...


def make_executor(
    name: str, ray_address: str | None = None, stage_envs: dict[str, Any] | None = None
) -> Executor:
    """The executor by name; Ray is imported only when it is asked for. `stage_envs` (stage
    name -> StageEnv) run a stage's workers in their own environment (Ray only)."""
    if name == "local":
        from stepedit_core.executors.local import LocalExecutor

        if stage_envs:
            raise ValueError("stage environments need the ray executor")
        return LocalExecutor()
    if name == "ray":
        from stepedit_core.executors.ray_data import RayDataExecutor

        return RayDataExecutor(address=ray_address, stage_envs=stage_envs)
    raise ValueError(f"unknown executor {name!r}; expected one of: {', '.join(EXECUTORS)}")
