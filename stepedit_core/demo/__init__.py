"""Demo clips shipped with stepedit: short English lines by the Piper voice "joe".

`demo_clips()` lists them (clean, noisy and pause-heavy variants; 24 kHz mono FLAC).
`python -m stepedit_core.demo.make_clips` regenerates them; see that module's docstring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEMO_DIR = Path(__file__).resolve().parent
CATALOG = DEMO_DIR / "clips.json"


def demo_clips() -> list[dict[str, Any]]:
    """The entries of `clips.json`, each with `path`: the clip's absolute file path."""
    entries = json.loads(CATALOG.read_text(encoding="utf-8"))
    return [{**entry, "path": str(DEMO_DIR / entry["file"])} for entry in entries]


__all__ = ["DEMO_DIR", "demo_clips"]
