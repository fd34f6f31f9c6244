"""What the command line exits with (the table is in `stepedit --help`, see cli.py), and
`Refused`, which every command raises to exit with status 2."""

from __future__ import annotations

from stepedit_core.foundation.failures import RunRefused

OK = 0
ROWS_FAILED = 1
REFUSED = 2
CRASHED = 3
CLOSED_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader went away


class Refused(RunRefused):
    """The command can not start; the message says why."""


def exit_status(record: dict) -> int:
    """0 when every row of the finished run is ok, 1 when some failed."""
    return ROWS_FAILED if record["counts"]["failed"] else OK
