"""The run's static review page (RUN/report/index.html): see `build.build_report`."""

from stepedit_core.report.build import build_report

__all__ = ["build_report"]
