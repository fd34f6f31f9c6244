"""Retry with backoff for object-store calls: an endpoint that is unreachable for a few seconds
(a restarted S3 gateway, a network blip) must cost a pause, not a lost clip or a failed run."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# Waits between attempts: about a minute in all before giving up.
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0)
# Errors that say something about the object, not the connection: never retried.
PERMANENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures (refused, reset, timed out, endpoint unreachable)."""
    if isinstance(exc, PERMANENT):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    name = type(exc).__name__
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                "ClientConnectorError", "ServerDisconnectedError", "ClientOSError",
                "ConnectionClosedError", "ResponseStreamingError"):  # fmt: skip
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


def retrying(call: Callable[[], T], what: str, backoff: tuple[float, ...] = BACKOFF_S) -> T:
    """`call()`, retried after each transient failure with the given waits."""
    for wait in (*backoff, None):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - filtered by is_transient, re-raised otherwise
            if wait is None or not is_transient(exc):
                raise
            log.warning("%s: %s; retrying in %.1f s", what, type(exc).__name__, wait)
            time.sleep(wait)
    raise AssertionError("unreachable")
