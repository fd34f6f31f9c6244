"""Engine registry: names users type on the command line -> engine classes (imported lazily,
so listing engines never loads torch or a model)."""

from __future__ import annotations

import importlib

from stepedit_core.edits import SIGNAL, STEPAUDIO
from stepedit_core.engines.base import Engine, EngineNotReady
from stepedit_core.engines.options import EngineOptions

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


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "EngineNotReady",
    "EngineOptions",
    "UnknownEngine",
    "engine_class",
    "make_engine",
]
