"""Where a margin set lives in its run folder (the review page reads it too).

RUN/dataset/rows.parquet    the derived manifest the run edits (pair_rows.py)
RUN/dataset/sft.parquet     the set; its footer holds the set's settings (SET_METADATA)
RUN/dataset/README.md       the data card
RUN/dataset/neutral/        the neutral clones (engines that clone)
"""

from __future__ import annotations

from stepedit_core.store import RunStore

SET_METADATA = "stepedit_margin_set"  # sft.parquet footer key: the set's settings as JSON


def rows_path(store: RunStore) -> str:
    return store.path("dataset", "rows.parquet")


def sft_path(store: RunStore) -> str:
    return store.path("dataset", "sft.parquet")


def card_path(store: RunStore) -> str:
    return store.path("dataset", "README.md")


def neutral_path(store: RunStore, name: str) -> str:
    return store.path("dataset", "neutral", name)
