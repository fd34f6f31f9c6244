"""The default path (the signal engine's edits, cheap QC, mastering, segments, delivery) runs
without importing torch: a fresh interpreter does the work and reports what it imported."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from stepedit_core.engines.base import EngineNotReady
from stepedit_core.engines.signal.engine import SignalEngine

DEMO_CLIP = Path(__file__).resolve().parent.parent / "stepedit_core" / "demo" / "pauses_01.flac"

DEFAULT_PATH = """
import sys
import numpy as np
from stepedit_core.catalog.segments import plan_file
from stepedit_core.engines.signal.engine import SignalEditStage
from stepedit_core.foundation.audio import Audio, load
from stepedit_core.foundation.edits import parse_edit
from stepedit_core.quality import delivered_files, qc
from stepedit_core.quality.round_qc import MeasureRound
from stepedit_core.signal.vad import speech_spans

source, _ = load(sys.argv[1])
stage = SignalEditStage()
stage.setup()
MeasureRound().setup()
samples = source.samples
for edit in ("speed=1.1", "denoise", "vad", "loudness=acx", "loudness=-16"):
    samples = stage.apply(parse_edit(edit), samples, source.sample_rate)
report = qc.measure(Audio(samples, source.sample_rate), qc.reference(source))
pieces, _ = plan_file(sys.argv[1], max_s=3.0)
print("speech_ratio", report.metrics["speech_ratio"])
print("spans", len(speech_spans(samples, source.sample_rate)))
print("pieces", len(pieces))
print("loaded", sorted(m for m in ("torch", "silero_vad") if m in sys.modules))
"""


def test_the_default_path_imports_no_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", DEFAULT_PATH, str(DEMO_CLIP)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert float(lines["speech_ratio"]) > 0.3  # the detector did run and found the speech
    assert int(lines["spans"]) >= 1 and int(lines["pieces"]) == 2
    assert lines["loaded"] == "[]"


def test_the_signal_engine_asks_for_onnxruntime_not_torch(monkeypatch) -> None:
    real = importlib.util.find_spec
    gone = {"torch"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a)
    )
    SignalEngine().check_ready()  # torch is not needed
    gone.add("onnxruntime")
    with pytest.raises(EngineNotReady, match=r"needs onnxruntime;"):
        SignalEngine().check_ready()
