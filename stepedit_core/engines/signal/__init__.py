"""CPU signal engine: speed, denoise, vad and loudness edits (no transcript, no model download)."""

from stepedit_core.engines.signal.engine import SignalEditStage, SignalEngine

__all__ = ["SignalEditStage", "SignalEngine"]
