"""silero-vad's ONNX model run through onnxruntime: speech probabilities of 32 ms windows.

The model file ships in silero-vad's wheel; it is found through the package's location on disk
without importing the package (importing `silero_vad` imports torch). The model is recurrent:
every call takes the window with the last samples of the window before it in front (its audio
context) and the state the previous call returned, so a `WindowScorer` keeps both between calls
and between the blocks it is fed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

MODEL_RATE = 16000
WINDOW = 512  # samples per model call at 16 kHz
CONTEXT = 64  # samples of the previous window the model sees in front of each window
STATE_SHAPE = (2, 1, 128)  # the recurrent state for one stream
MODEL_FILE = "silero_vad.onnx"


def silero_model_path() -> Path:
    """The ONNX model in the installed silero-vad wheel (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("silero-vad is not installed: speech detection needs its model file")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise RuntimeError(
        f"silero-vad is installed without data/{MODEL_FILE} "
        f"(looked in {', '.join(spec.submodule_search_locations)})"
    )


def load_session(path: Path | None = None) -> Any:
    """An onnxruntime session on the CPU with one thread: windows are scored one after another,
    so more threads would only add hand-over cost (and the GPU build must not claim a GPU)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(path or silero_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )


class WindowScorer:
    """Speech probabilities of consecutive 512-sample windows of one 16 kHz stream, the model's
    state and audio context carried from one window (and one `score` call) to the next."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._rate = np.array(MODEL_RATE, dtype=np.int64)
        self.reset_states()

    def reset_states(self) -> None:
        """Start a new stream: zero state, silence as the first window's context."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._framed = np.zeros((1, CONTEXT + WINDOW), dtype=np.float32)

    def score(self, windows: np.ndarray) -> list[float]:
        """One probability per window of `windows` (1-D float32, a whole number of windows)."""
        if windows.ndim != 1 or windows.shape[0] % WINDOW:
            raise ValueError(
                f"the model scores whole {WINDOW}-sample windows; got shape {windows.shape}"
            )
        scores = []
        framed = self._framed
        for at in range(0, windows.shape[0], WINDOW):
            # the previous window's tail becomes this window's context, in place
            framed[0, :CONTEXT] = framed[0, -CONTEXT:]
            framed[0, CONTEXT:] = windows[at : at + WINDOW]
            probability, self._state = self._session.run(
                None, {"input": framed, "state": self._state, "sr": self._rate}
            )
            scores.append(float(probability[0, 0]))
        return scores
