"""The footer key of a margin set (RUN/dataset/sft.parquet; the review page reads it too).
Where the set's files are is the run layout's business (store.py)."""

from __future__ import annotations

SET_METADATA = "stepedit_margin_set"  # sft.parquet footer key: the set's settings as JSON
