"""Named crash points for testing durability: with STEPEDIT_FAILPOINT=NAME set, the process
kills itself with SIGKILL the first time it passes `failpoint(NAME)` (NAME:N: the N-th time).

Crash tests need a crash at an exact moment (between a part's commit and its audio, halfway
through planning, after the manifest but before run.json); a timer can not hit those reliably.
Without the variable a failpoint is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "STEPEDIT_FAILPOINT"
_passed: dict[str, int] = {}


def failpoint(name: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target != name:
        return
    _passed[name] = _passed.get(name, 0) + 1
    if _passed[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
