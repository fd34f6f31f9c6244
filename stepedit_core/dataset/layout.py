"""Where a margin set lives in its run folder (the review page reads it too).

OUT/_datasets/ID/rows.parquet  the derived manifest the run edits (pair_rows.py): beside the
                               run folder, never inside it (a run never holds its own inputs)
RUN/dataset/sft.parquet     the set; its footer holds the set's settings (SET_METADATA)
RUN/dataset/README.md       the data card
RUN/dataset/neutral/        the neutral clones (engines that clone)
"""

from __future__ import annotations

import posixpath

from stepedit_core.store import RunStore

SET_METADATA = "stepedit_margin_set"  # sft.parquet footer key: the set's settings as JSON


def rows_path(store: RunStore) -> str:
    out = posixpath.dirname(store.root)
    return posixpath.join(out, "_datasets", store.run_id, "rows.parquet")


def sft_path(store: RunStore) -> str:
    return store.path("dataset", "sft.parquet")


def card_path(store: RunStore) -> str:
    return store.path("dataset", "README.md")


def neutral_path(store: RunStore, name: str) -> str:
    return store.path("dataset", "neutral", name)
