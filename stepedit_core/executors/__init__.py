"""Executors run the same flat list of stages over work items: in-process or on Ray Data."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from stepedit_core.stages import Stage, WorkItem

EXECUTORS = ("ray", "local")


class Executor(Protocol):
    name: str

    def run(self, stages: list[Stage], items: Iterable[WorkItem]) -> Iterator[WorkItem]: ...


def make_executor(name: str, ray_address: str | None = None) -> Executor:
    """The executor by name; Ray is imported only when it is asked for."""
    if name == "local":
        from stepedit_core.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from stepedit_core.executors.ray_data import RayDataExecutor

        return RayDataExecutor(address=ray_address)
    raise ValueError(f"unknown executor {name!r}; expected one of: {', '.join(EXECUTORS)}")
