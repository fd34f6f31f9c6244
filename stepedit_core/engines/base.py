"""What an engine is: a name in the edit table (which edits it runs) plus the stages of a round."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import EDIT_TABLE, EditSpec, engines_running, types_for
from stepedit_core.foundation.failures import ItemFailure, RunRefused
from stepedit_core.foundation.stages import Stage
from stepedit_core.foundation.traces import EngineTrace

if TYPE_CHECKING:  # options.py imports the engines' config modules, which import this one
    from stepedit_core.engines.options import EngineOptions


class EngineNotReady(RunRefused):
    """The engine cannot start at all (missing model folder, missing package): refuse the run."""


class Engine(ABC):
    name: str = "engine"
    version: str = "0"
    description: str = ""
    # False for engines that never read the transcript (a missing `text` is then no problem)
    reads_text: bool = True
    # edit type -> what this engine does with it, beyond the table's options (`stepedit engines`)
    notes: dict[str, str] = {}
    # What the next round receives of a round's output; None: the output as it is. A
    # module-level function, so the round-end stage that calls it pickles it by reference.
    round_handoff: Callable[[Audio], Audio] | None = None
    # What the engine's stages hand each other in a round, and the record columns it adds
    # (traces.py); the base trace adds none.
    trace_type: type[EngineTrace] = EngineTrace

    def __init__(self, options: EngineOptions | None = None) -> None:
        from stepedit_core.engines.options import EngineOptions

        self.options = options or EngineOptions()

    def supports(self, spec: EditSpec) -> bool:
        """Whether this engine runs this edit (type and option), as the edit table says."""
        kind = EDIT_TABLE.get(spec.type)
        return kind is not None and kind.accepts(self.name, spec)

    def capabilities(self) -> dict[str, str]:
        """Edit type -> the options this engine accepts, with its notes."""
        described = {}
        for name in types_for(self.name):
            text = EDIT_TABLE[name].options_for(self.name)
            note = self.notes.get(name)
            described[name] = f"{text}; {note}" if note else text
        return described

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

    def check_edit(self, spec: EditSpec) -> None:
        """ItemFailure `unsupported_edit`, naming the engines that can, unless this one runs it."""
        if not self.supports(spec):
            others = [name for name in engines_running(spec) if name != self.name]
            hint = (
                f"; supported by engine: {', '.join(others)}"
                if others
                else "; no engine supports it"
            )
            raise ItemFailure(
                "unsupported_edit", f"engine {self.name!r} does not support edit {spec}{hint}"
            )

    def check_row(
        self, chain: tuple[EditSpec, ...], text: str | None, target_text: str | None
    ) -> None:
        """ItemFailure when this engine can not edit a row with this chain and these texts."""
        for spec in chain:
            self.check_edit(spec)
            # with an ASR model a row without text gets its transcript (stepedit_core/words)
            asr = self.options.asr_models is not None
            if spec.kind.needs_text and self.reads_text and not asr and not (text or "").strip():
                raise ItemFailure(
                    "missing_text",
                    f"edit {spec} needs the transcript in column 'text' (or pass --asr-models)",
                )
            if spec.kind.needs_target_text and not (target_text or "").strip():
                raise ItemFailure("missing_target_text", f"edit {spec} needs column 'target_text'")

    def describe(self) -> dict[str, Any]:
        from stepedit_core.engines.options import engine_settings

        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "edits": self.capabilities(),
            "settings": engine_settings(self.name),
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
