"""Text for the review page's HTML."""

from __future__ import annotations

import html
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def html_text(value: object) -> str:
    """Escaped text, with control characters (a NUL in a clip id) shown as `\\xNN`, never
    written raw into the page."""
    text = "" if value is None else str(value)
    return html.escape(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text))
