"""What `stepedit run` shows while it works: a live bar on a terminal, a plain line every few
seconds when the output goes to a file or a pipe, nothing under `--quiet`.

Each renderer takes `update(done, total, failed)` for the whole run (clips done of the clips
planned, and how many of those failed so far) and works out rate and time left itself.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TextIO

Clock = Callable[[], float]
BAR_REDRAW_S = 0.1  # a terminal redraw at most this often: a fast run must not flood it
LINE_EVERY_S = 10.0  # a plain line at most this often, plus one when the run is done


def duration(seconds: float) -> str:
    """1:05 or 1:02:03, the way a clock shows a span."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Rates:
    """Rate since the first report and the time left at that rate."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started: float | None = None

    def measure(self, done: int, total: int) -> tuple[float | None, float | None]:
        now = self.clock()
        if self.started is None:
            self.started = now
        elapsed = now - self.started
        if done <= 0 or elapsed <= 0:
            return None, None
        rate = done / elapsed
        return rate, max(total - done, 0) / rate


def _rate_text(rate: float | None) -> str:
    if rate is None:
        return "-- clips/s"
    return f"{rate:.1f} clips/s" if rate >= 1 else f"{rate:.2f} clips/s"


def _eta_text(eta: float | None) -> str:
    return f"ETA {duration(eta)}" if eta is not None else "ETA --:--"


class Silent:
    """`--quiet`: shows nothing."""

    def update(self, done: int, total: int, failed: int) -> None:
        pass

    def close(self) -> None:
        pass


class TerminalBar:
    """One line redrawn in place: percent, bar, clips done of total, rate, ETA, failures."""

    def __init__(self, stream: TextIO, clock: Clock = time.monotonic, width: int | None = None):
        self.stream = stream
        self.clock = clock
        self.width = width
        self.rates = _Rates(clock)
        self._last_draw: float | None = None
        self._last: tuple[int, int, int] | None = None
        self._drawn = False

    def update(self, done: int, total: int, failed: int) -> None:
        now = self.clock()
        rate, eta = self.rates.measure(done, total)
        finished = total > 0 and done >= total
        if not finished and self._last_draw is not None and now - self._last_draw < BAR_REDRAW_S:
            self._last = (done, total, failed)
            return
        self._draw(done, total, failed, rate, eta)
        self._last_draw = now
        self._last = None

    def line(self, done: int, total: int, failed: int, rate: float | None, eta: float | None):
        columns = self.width or shutil.get_terminal_size((100, 20)).columns
        pct = done / total if total else 0.0
        tail = f" {done}/{total} clips  {_rate_text(rate)}  {_eta_text(eta)}  {failed} failed"
        head = f"{pct:4.0%} "
        room = max(columns - len(head) - len(tail) - 3, 10)
        filled = int(room * pct)
        return f"{head}|{'#' * filled}{'.' * (room - filled)}|{tail}"[: columns - 1]

    def _draw(self, done: int, total: int, failed: int, rate, eta) -> None:
        # \r returns to the line start and \x1b[K clears what a longer earlier line left
        self.stream.write("\r\x1b[K" + self.line(done, total, failed, rate, eta))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._last is not None:  # the final state was throttled away: show it
            rate, eta = self.rates.measure(self._last[0], self._last[1])
            self._draw(*self._last, rate, eta)
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


class PeriodicLines:
    """A plain line now and then, for logs and pipes where a redrawn bar would be garbage."""

    def __init__(
        self, stream: TextIO, clock: Clock = time.monotonic, every_s: float = LINE_EVERY_S
    ):
        self.stream = stream
        self.clock = clock
        self.every_s = every_s
        self.rates = _Rates(clock)
        self._last_line: float | None = None
        self._finished = False

    def update(self, done: int, total: int, failed: int) -> None:
        now = self.clock()
        rate, eta = self.rates.measure(done, total)
        finished = total > 0 and done >= total
        if finished and self._finished:
            return
        due = self._last_line is None or now - self._last_line >= self.every_s
        if done == 0 and not finished:
            due = False  # "0 of N" says nothing the plan did not already say
        if not (due or finished):
            return
        self._last_line = now
        self._finished = finished
        pct = done / total if total else 0.0
        self.stream.write(
            f"progress: {done}/{total} clips ({pct:.0%}), {_rate_text(rate)}, "
            f"{_eta_text(eta)}, {failed} failed\n"
        )
        self.stream.flush()

    def close(self) -> None:
        pass


Renderer = Silent | TerminalBar | PeriodicLines


def make_renderer(quiet: bool = False, stream: TextIO | None = None) -> Renderer:
    """The renderer for where the output goes: nothing, a live bar, or plain lines."""
    stream = stream if stream is not None else sys.stderr
    if quiet:
        return Silent()
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return TerminalBar(stream)
    return PeriodicLines(stream)
