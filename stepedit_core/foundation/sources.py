"""Reading source audio within bounds: only regular files (and objects), at most a size limit,
within a time limit.

A manifest may name a FIFO (opening it blocks until someone writes), a device (`/dev/zero`
never ends) or a sparse file of many gigabytes; read whole, any of these hangs a run or takes
a shared machine's memory. So a source is looked at before it is opened: while planning, a
local path that is not a regular file fails as `not_regular_file` and one over the size limit
as `file_too_large` (neither is ever opened); when a clip is loaded, its size is checked again
before reading (objects are only sized then), at most the limit is read, a header that claims
more audio than the limit allows is refused before decoding, and a read that takes longer
than the timeout fails as `read_timeout`. Each fails its own row; the batch goes on.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import fsspec

from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.retry import retrying

T = TypeVar("T")
MB = 1 << 20
DEFAULT_MAX_MB = 1024
DEFAULT_READ_TIMEOUT_S = 300.0
# decoded float32 samples may take this many times the size limit (16-bit PCM doubles when
# decoded, FLAC roughly quadruples): what a header claims beyond that is never allocated
DECODED_FACTOR = 4

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class InputLimits:
    max_bytes: int = DEFAULT_MAX_MB * MB
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S

    @classmethod
    def of(cls, max_mb: int, read_timeout_s: float) -> InputLimits:
        return cls(max_bytes=int(max_mb) * MB, read_timeout_s=float(read_timeout_s))

    @property
    def max_decoded_bytes(self) -> int:
        return self.max_bytes * DECODED_FACTOR

    def too_large(self, uri: str, size: int) -> ItemFailure:
        return ItemFailure(
            "file_too_large",
            f"field 'audio_uri' {uri}: {size} bytes, over the {self.max_bytes // MB} MB limit "
            "(--max-input-mb); it was not read",
        )


def _is_local(uri: str) -> bool:
    protocol, sep, _ = uri.partition("://")
    return not sep or protocol.lower() in ("file", "local")


def _local_stat(uri: str) -> os.stat_result | None:
    """A local path's stat (None for objects, and for what can not be stat'ed)."""
    if not _is_local(uri):
        return None
    try:
        return os.stat(uri.split("://", 1)[1] if "://" in uri else uri)
    except OSError:
        return None


def special_kind(uri: str) -> str | None:
    """What a local path is when it is a FIFO, a device or a socket (seen without opening it)."""
    info = _local_stat(uri)
    if info is None:
        return None
    return next((kind for test, kind in _KINDS if test(info.st_mode)), None)


def check_source(uri: str, limits: InputLimits) -> None:
    """At plan time, for a local path: refuse what is not a regular file or is over the size
    limit, from its stat alone (never opened). A missing file is left to the load stage;
    objects are checked when loaded."""
    kind = special_kind(uri)
    if kind is not None:
        raise ItemFailure(
            "not_regular_file",
            f"field 'audio_uri' {uri} is {kind}, not a regular file; it was not opened",
        )
    info = _local_stat(uri)
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size > limits.max_bytes:
        raise limits.too_large(uri, info.st_size)


def read_source(uri: str, limits: InputLimits) -> bytes:
    """A source's bytes: sized before it is opened, at most `max_bytes` read, within
    `read_timeout_s` (connection blips are retried inside that time)."""

    def read() -> bytes:
        fs, path = fsspec.core.url_to_fs(uri)
        info = fs.info(path)
        kind = info.get("type")
        if kind == "directory":
            raise IsADirectoryError(path)
        if kind not in (None, "file"):
            raise ItemFailure(
                "not_regular_file", f"field 'audio_uri' {uri} is not a regular file ({kind})"
            )
        size = info.get("size")
        if size is not None and size > limits.max_bytes:
            raise limits.too_large(uri, int(size))
        with fs.open(path, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:  # it grew, or its size was not known
            raise limits.too_large(uri, len(data))
        return data

    return within(
        lambda: retrying(read, f"reading {uri}"),
        limits.read_timeout_s,
        lambda: ItemFailure(
            "read_timeout",
            f"reading {uri} took longer than {limits.read_timeout_s:g} s (--read-timeout); "
            "abandoned",
        ),
    )


def within(call: Callable[[], T], seconds: float, timeout: Callable[[], Exception]) -> T:
    """`call()` in a helper thread, given up after `seconds` (raising `timeout()`). A read
    blocked in the kernel can not be interrupted: its thread is left to finish on its own
    (daemon), while the clip fails and the batch goes on."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="stepedit-read", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise timeout()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
