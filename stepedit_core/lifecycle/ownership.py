"""Which folders a run may write to and clear: only its own.

`OUT/RUN_ID` is a user-chosen location, so it may already hold something that is not a run (a
catalog's own folder, another tool's outputs). A run folder carries a marker, `stepedit-run.json`,
written by its first attempt; a run refuses (before writing anything) a folder that exists, is
not empty and is not a run, and a run folder that holds the manifest, an allowed audio root or
any row's source audio, since `--overwrite` would delete them and outputs would mix with them.

Folders written before the marker existed are still runs: one with `run.json` or
`_work/job.json` (or a lease) is recognised and gets its marker at its next attempt.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Literal

import stepedit_core
from stepedit_core.catalog.access import AllowedRoots, Location, UriNotResolvable, resolve
from stepedit_core.catalog.manifest import iter_rows
from stepedit_core.foundation.failures import RunRefused
from stepedit_core.foundation.store import MARKER, RunStore

FolderKind = Literal["absent", "empty", "run", "foreign"]


class NotARunFolder(RunRefused):
    """The output location is not a run folder, or holds the run's own inputs."""


def folder_kind(store: RunStore) -> FolderKind:
    """absent / empty (safe to use), run (marked, or written by an earlier version), foreign."""
    fs = store.fs
    fs.invalidate_cache(store.root)
    if not store.exists(store.root):
        return "absent"
    if not fs.isdir(store.root):
        return "foreign"  # a file where the run folder would be
    if store.exists(store.marker):
        return "run"
    # what only a run writes: a folder holding one of these (and no marker) predates the marker
    if any(store.exists(sign) for sign in (store.run_json, store.job_json, store.lease)):
        return "run"
    return "empty" if not store.list(store.root, suffix="") else "foreign"


def check_run_folder(store: RunStore, manifest_uri: str, allow_roots: Iterable[str] = ()) -> None:
    """Refuse (NotARunFolder) a run folder that is not one, or that holds the run's inputs.
    Reads only; call it before anything is written under the run folder."""
    where = store.uri(store.root)
    kind = folder_kind(store)
    if kind == "foreign":
        raise NotARunFolder(
            f"{where} exists and is not a stepedit run folder (no {MARKER}, run.json or "
            "_work/job.json): refusing to write into it or clear it; choose another --out "
            "or --run-id"
        )
    folder = resolve(where)
    inside = _inside(folder)
    if inside(manifest_uri):
        raise NotARunFolder(
            f"the run folder {where} holds the manifest {manifest_uri}: outputs would mix with "
            "the inputs and --overwrite would delete them; choose another --out or --run-id"
        )
    roots = AllowedRoots.for_manifest(manifest_uri, allow_roots)
    for root in roots.roots:
        if root.within(folder):
            raise NotARunFolder(
                f"the run folder {where} holds the allowed audio root {root.uri()}: source "
                "audio would mix with outputs; choose another --out or --run-id"
            )
    # rows outside every root are never read; only a folder inside a root can hold sources
    if any(folder.within(root) for root in roots.roots):
        for index, row in iter_rows(manifest_uri):
            uri = row.get("audio_uri")
            if uri and inside(uri):
                raise NotARunFolder(
                    f"row {index}: field 'audio_uri' {uri!r} is inside the run folder {where}: "
                    "a run never reads its own folder; choose another --out or --run-id"
                )


def _inside(folder: Location):
    def inside(uri: str) -> bool:
        try:
            return resolve(str(uri)).within(folder)
        except UriNotResolvable:
            return False

    return inside


def mark_run_folder(store: RunStore) -> None:
    """Write the marker once (first attempt, or the first attempt of a pre-marker run)."""
    if store.exists(store.marker):
        return
    store.write_json(
        store.marker,
        {
            "stepedit_run": store.run_id,
            "created": time.time(),
            "package_version": stepedit_core.__version__,
            "note": "written by stepedit: this folder is a run; `stepedit run --overwrite` "
            "removes only what the run wrote",
        },
    )
