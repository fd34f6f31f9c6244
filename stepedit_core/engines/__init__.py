"""Engine registry: names users type on the command line -> engine classes (imported lazily,
so listing engines never loads torch or a model)."""

from __future__ import annotations

import importlib
from functools import cache

import pyarrow as pa

from stepedit_core.engines.base import Engine, EngineNotReady
from stepedit_core.engines.options import EngineOptions
from stepedit_core.foundation.edits import SIGNAL, STEPAUDIO

ENGINES = {
    SIGNAL: "stepedit_core.engines.signal:SignalEngine",
    STEPAUDIO: "stepedit_core.engines.stepaudio.engine:StepAudioEngine",
}
DEFAULT_ENGINE = SIGNAL


class UnknownEngine(ValueError):
    pass


def engine_class(name: str) -> type[Engine]:
    try:
        target = ENGINES[name]
    except KeyError:
        raise UnknownEngine(
            f"unknown engine {name!r}; available engines: {', '.join(ENGINES)}"
        ) from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_engine(name: str, options: EngineOptions | None = None) -> Engine:
    return engine_class(name)(options)


@cache
def round_record_schema() -> pa.Schema:
    """The schema of every run's round records: the shared columns and every registered engine's
    own, whichever engine a run uses (its files read alike, and a column's type never changes
    from run to run)."""
    from stepedit_core.catalog.records import round_schema

    return round_schema(
        column for name in ENGINES for column in engine_class(name).trace_type.COLUMNS
    )


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "EngineNotReady",
    "EngineOptions",
    "UnknownEngine",
    "engine_class",
    "make_engine",
    "round_record_schema",
]
