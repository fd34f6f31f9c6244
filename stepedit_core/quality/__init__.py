"""Quality and delivery: QC metrics and the one reader of a record's `qc_json`, delivery
profiles and verdicts, best-round choice, encoding, and the delivered files of a row.

May import: foundation, catalog, signal. Never engines (their meters belong in signal),
lifecycle, executors, audit, judges, dataset or report.
"""
