"""Named crash points for testing durability: with STEPEDIT_FAILPOINT=NAME set, the process
kills itself with SIGKILL the first time it passes `failpoint(NAME)` (NAME:N: the N-th time).
With STEPEDIT_HOLDPOINT=NAME[:N] it stops there instead and waits, doing nothing, until it is
killed from outside. With STEPEDIT_STOPPOINT=NAME[:N] it pauses itself there with SIGSTOP, every
thread at once (lease renewal included), until it is sent SIGCONT, and then goes on.

Crash tests need a crash at an exact moment (between a part's commit and its audio, halfway
through planning, after the manifest but before run.json); a timer can not hit those reliably.
A hold point lets a test kill at a moment of its own choosing and still be sure the attempt it
kills has not finished first (on a loaded machine a small run can end before any timer fires);
a stop point does the same for a pause the attempt must survive.
Without the variables a failpoint is two dictionary lookups.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "STEPEDIT_FAILPOINT"
HOLD_ENV = "STEPEDIT_HOLDPOINT"
STOP_ENV = "STEPEDIT_STOPPOINT"
_passed: dict[tuple[str, str], int] = {}


def _reached(env: str, name: str) -> bool:
    """Whether this pass of `name` is the one the variable `env` asks for (NAME[:N])."""
    wanted = os.environ.get(env)
    if not wanted:
        return False
    target, _, nth = wanted.partition(":")
    if target != name:
        return False
    key = (env, name)
    _passed[key] = _passed.get(key, 0) + 1
    return _passed[key] == int(nth or 1)


def failpoint(name: str) -> None:
    if _reached(ENV, name):
        os.kill(os.getpid(), signal.SIGKILL)
    if _reached(STOP_ENV, name):
        os.kill(os.getpid(), signal.SIGSTOP)
    if _reached(HOLD_ENV, name):
        while True:  # held until the test kills the process
            time.sleep(1.0)
