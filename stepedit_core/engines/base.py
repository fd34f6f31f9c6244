"""What an engine is: a capability table plus the list of stages that make one editing round."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from stepedit_core.edits import NEEDS_TARGET_TEXT, NEEDS_TEXT, EditSpec
from stepedit_core.stages import Stage


class EngineNotReady(Exception):
    """The engine cannot start at all (missing model folder, missing package): refuse the run."""


@dataclass
class EngineOptions:
    """Run-level engine settings. Engines ignore what does not concern them."""

    models_dir: str | None = None  # holds Step-Audio-Tokenizer/ and Step-Audio-EditX/
    stepaudio_src: str | None = None  # checkout of the public Step-Audio-EditX repository
    prompt_mode: str = "chain"  # chain: round k's output is round k+1's voice prompt; fixed
    llm_backend: str = "transformers"  # or "vllm"
    vad_max_pause: float = 0.3  # seconds a pause may last after the vad edit (signal engine)
    gpus: dict[str, float] = field(default_factory=dict)  # stage name -> GPU fraction per actor
    batch_sizes: dict[str, int] = field(default_factory=dict)  # stage name -> batch size
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(ABC):
    name: str = "engine"
    version: str = "0"
    description: str = ""
    # edit type -> human description of the accepted options (shown by `stepedit engines`)
    capabilities: dict[str, str] = {}

    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()

    @abstractmethod
    def supports(self, spec: EditSpec) -> bool:
        """Whether this engine can run this edit (type and option)."""

    def stages(self) -> list[Stage]:
        """The stages of one editing round, in order, built unloaded (`setup()` loads).

        The same objects are returned on every call, so an in-process run that repeats them for
        each round loads each model once; Ray pickles them per round into separate actor pools.
        """
        if not hasattr(self, "_stages"):
            self._stages = self.build_stages()
        return self._stages

    @abstractmethod
    def build_stages(self) -> list[Stage]:
        """Construct this engine's stages (called once per engine object)."""

    def check_ready(self) -> None:  # noqa: B027 - engines without external assets have nothing to check
        """Raise EngineNotReady when the engine can not run here (checked before any work)."""

    def row_problem(
        self, chain: tuple[EditSpec, ...], text: str | None, target_text: str | None
    ) -> tuple[str, str] | None:
        """(code, message) when a row can not be edited by this engine, else None."""
        for spec in chain:
            if not self.supports(spec):
                return "unsupported_edit", unsupported_message(self.name, spec)
            if spec.type in self.needs_text() and not (text or "").strip():
                return "missing_text", f"edit {spec} needs the transcript in column 'text'"
            if spec.type in NEEDS_TARGET_TEXT and not (target_text or "").strip():
                return "missing_target_text", f"edit {spec} needs column 'target_text'"
        return None

    def needs_text(self) -> frozenset[str]:
        """Edit types whose instructions quote the transcript."""
        return NEEDS_TEXT

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "edits": dict(self.capabilities),
            "stages": [
                {
                    "name": stage.name,
                    "batch_size": stage.batch_size,
                    "cpus": stage.resources.cpus,
                    "gpus": stage.resources.gpus,
                    "memory_mb": stage.resources.memory_mb,
                }
                for stage in self.stages()
            ],
        }


def unsupported_message(engine_name: str, spec: EditSpec) -> str:
    from stepedit_core.engines import engines_supporting  # registry imports engines lazily

    others = [name for name in engines_supporting(spec) if name != engine_name]
    hint = f"; supported by engine: {', '.join(others)}" if others else "; no engine supports it"
    return f"engine {engine_name!r} does not support edit {spec}{hint}"
