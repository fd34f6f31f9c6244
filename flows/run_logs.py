"""Where Prefect's and Ray's log lines go: a log file per attempt under the run's folder
(RUN/_work/logs/), and on the console only with `-v`.

A default run shows stepedit's own progress and summary; the orchestration's INFO lines
(timestamps, task-run names, the temporary server starting) are for the Prefect UI, which
still receives them through Prefect's API handler, and for this file. On local disk the file is
written as the run goes; on object storage it is written to a local temporary file and uploaded
when the attempt ends (also when it is stopped or crashes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator

from stepedit_core.executors.ray_data import RAY_TO_CONSOLE_ENV
from stepedit_core.foundation.store import LOCAL, RunStore
from stepedit_core.lifecycle.ownership import mark_run_folder

RAY_LOGGERS = ("ray", "ray.data")
CONSOLE_LEVEL_ENV = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"
# Prefect's flow and task runs by name, as its console shows them
FLOW_RUN_FORMAT = "%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s"
TASK_RUN_FORMAT = "%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s"


def console_logging(verbose: bool) -> None:
    """Before Prefect is imported: its console shows warnings and errors only, unless -v."""
    if verbose:
        os.environ[RAY_TO_CONSOLE_ENV] = "1"
    else:
        os.environ.setdefault(CONSOLE_LEVEL_ENV, "WARNING")


def log_name() -> str:
    return time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime()) + f"-{os.getpid()}.log"


class _Forward(logging.Handler):
    """Hands records to another handler (Ray's logger does not pass its records up to the
    root logger, where the file's handler is)."""

    def __init__(self, target: logging.Handler, logger: logging.Logger) -> None:
        super().__init__(logging.NOTSET)
        self.target, self.logger = target, logger

    def emit(self, record: logging.LogRecord) -> None:
        if not self.logger.propagate:  # else the root's handler gets it already
            self.target.handle(record)


def _formatter() -> logging.Formatter:
    from prefect.logging.formatters import PrefectFormatter

    return PrefectFormatter(
        FORMAT,
        flow_run_fmt=FLOW_RUN_FORMAT,
        task_run_fmt=TASK_RUN_FORMAT,
        defaults={"flow_run_name": None, "task_run_name": None},  # a line outside a run
    )


@contextlib.contextmanager
def run_log(store: RunStore) -> Iterator[str]:
    """While the block runs, INFO and above of Prefect and Ray go to this attempt's log file;
    yields its URI. The caller has checked the run folder (ownership.check_run_folder): it is
    marked as a run before the log's first byte goes in, so the flow's own check takes it."""
    mark_run_folder(store)
    final = f"{store.logs_dir}/{log_name()}"
    local = store.protocol in LOCAL
    if local:
        store.fs.makedirs(store.logs_dir, exist_ok=True)
        path = final
    else:
        handle, path = tempfile.mkstemp(prefix="stepedit-run-", suffix=".log")
        os.close(handle)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(_formatter())
    # Ray restyles the handlers on its loggers when it starts and stops their propagation
    # ("ray", and "ray.data" once Ray Data ran): each gets a forwarder, not the file; a
    # forwarder only takes what stops at its logger, so every line is written once
    rays = [logging.getLogger(name) for name in RAY_LOGGERS]
    attached = [(logging.getLogger(), handler), *((lg, _Forward(handler, lg)) for lg in rays)]
    for logger, each in attached:
        logger.addHandler(each)
    try:
        yield store.uri(final)
    finally:
        for logger, each in attached:
            logger.removeHandler(each)
        handler.close()
        if not local:
            with contextlib.suppress(OSError), open(path, "rb") as source:
                store.write_bytes(final, source.read())
            with contextlib.suppress(OSError):
                os.remove(path)
