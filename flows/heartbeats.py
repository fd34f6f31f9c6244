"""Prefect's flow-run heartbeats, without the wait at the end of every flow.

While a flow runs, Prefect sends heartbeat events from a thread that sleeps in one-second steps
between them; when the flow ends it stops the thread and, for a flow called from synchronous
code, joins it, so every run waits up to a second (half a second on average) for that thread to
wake up. The heartbeats themselves are not changed here: the thread still sends them as often,
stops sending once the flow ends, and exits on its next wake-up on its own (it is a daemon:
it never holds the process up). Only the wait goes, as it does in Prefect's own asynchronous
flows.
"""

from __future__ import annotations

import functools
import inspect

_MARK = "_stepedit_no_join"


def end_flows_without_waiting() -> bool:
    """Make this process's flows end without joining their heartbeat thread; returns whether
    it did (False: a Prefect without that thread, or it is done already)."""
    from prefect import flow_engine

    heartbeats = getattr(flow_engine, "_send_heartbeats", None)
    if heartbeats is None or getattr(heartbeats, _MARK, False):
        return False
    if "join_on_exit" not in inspect.signature(heartbeats).parameters:
        return False
    no_join = functools.partial(heartbeats, join_on_exit=False)
    setattr(no_join, _MARK, True)
    flow_engine._send_heartbeats = no_join
    return True
