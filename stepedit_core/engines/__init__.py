"""Engine registry: names users type on the command line -> engine classes (imported lazily,
so listing engines never loads torch or a model)."""

from __future__ import annotations

import importlib

from stepedit_core.edits import EditSpec
from stepedit_core.engines.base import Engine, EngineNotReady, EngineOptions

ENGINES = {
    "signal": "stepedit_core.engines.signal:SignalEngine",
    "step-audio-editx": "stepedit_core.engines.stepaudio.engine:StepAudioEngine",
}
DEFAULT_ENGINE = "signal"


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


def engines_supporting(spec: EditSpec) -> list[str]:
    names = []
    for name in ENGINES:
        try:
            if engine_class(name)(None).supports(spec):
                names.append(name)
        except ImportError:  # an engine whose optional packages are absent can't support it here
            continue
    return names


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "EngineNotReady",
    "EngineOptions",
    "UnknownEngine",
    "engine_class",
    "engines_supporting",
    "make_engine",
]
