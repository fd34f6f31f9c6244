"""Which audio a run may read, and the storage credentials it reads with.

A manifest is user data: an `audio_uri` may name any file the process can read (`/etc/shadow`,
`../../other-customer/clip.wav`) or any bucket the credentials reach. A run therefore reads
audio only under its allowed roots (`--allow-root`, by default the manifest's own folder or
bucket prefix). A URI is resolved before it is compared, so `..` segments and symbolic links
can not lead out of a root; a row whose URI resolves outside every root is refused while
planning (`uri_not_allowed`) and its file is never opened. The resolved URI is what the run
then opens, so what is read is exactly what was checked.

Storage options (fsspec keyword arguments such as an S3 key, secret and endpoint) are
installed as fsspec's per-protocol defaults, so every filesystem the run opens (manifest,
audio, output store) uses them without each caller passing them along, and worker processes
started from this one inherit them through the environment. They are secrets: `redact`
replaces their values wherever a job is written down.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import fsspec.config

from stepedit_core.foundation.failures import ItemFailure

LOCAL = "file"
LOCAL_PROTOCOLS = ("", "file", "local")
REDACTED = "***"


@dataclass(frozen=True)
class Location:
    """A URI reduced to what decides where it points: its protocol and a normalised path.

    Local paths are absolute with every symlink resolved; object-store paths are
    `bucket/key` with `.` and `..` segments folded the way a URL path is, so
    `s3://cat/a/../../other/x` is in bucket `other`."""

    protocol: str
    path: str

    def uri(self) -> str:
        return self.path if self.protocol == LOCAL else f"{self.protocol}://{self.path}"

    def within(self, root: Location) -> bool:
        """True when this location is the root or below it, compared segment by segment (so
        `/data/cat` does not contain `/data/catalog`)."""
        if self.protocol != root.protocol:
            return False
        base = root.path.rstrip("/")
        return self.path == base or self.path.startswith(base + "/") or base == ""


class UriNotResolvable(ValueError):
    pass


def resolve(uri: str) -> Location:
    """Where `uri` really points. Chained URIs (`simplecache::s3://...`) are not resolved:
    what they read is up to the chain, so they are never inside a root."""
    if "::" in uri:
        raise UriNotResolvable(f"chained URI {uri!r} is not supported as an audio or root URI")
    protocol, sep, rest = uri.partition("://")
    if not sep:
        protocol, rest = "", uri
    protocol = protocol.lower()
    if protocol in LOCAL_PROTOCOLS:
        return Location(LOCAL, os.path.realpath(os.path.expanduser(rest)))
    key = posixpath.normpath("/" + rest).lstrip("/")
    if not key or key == ".":
        raise UriNotResolvable(f"URI {uri!r} names no bucket")
    return Location(protocol, key)


def default_root(manifest_uri: str) -> str:
    """The folder (or bucket prefix) that holds the manifest."""
    where = resolve(manifest_uri)
    return Location(where.protocol, posixpath.dirname(where.path)).uri()


class AllowedRoots:
    """The roots a run may read audio from; `check` resolves a URI and refuses it when it is
    outside every root."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = [resolve(r) for r in roots]
        if not self.roots:
            raise ValueError("at least one allowed root is needed")

    @classmethod
    def for_manifest(cls, manifest_uri: str, roots: Iterable[str] = ()) -> AllowedRoots:
        """The given roots, or the manifest's own folder when none are given."""
        roots = list(roots)
        return cls(roots or [default_root(manifest_uri)])

    def describe(self) -> str:
        return ", ".join(r.uri() for r in self.roots)

    def check(self, uri: str) -> str:
        """The resolved URI to open, or ItemFailure('uri_not_allowed') naming the roots."""
        try:
            where = resolve(uri)
        except UriNotResolvable as exc:
            raise ItemFailure("uri_not_allowed", f"field 'audio_uri': {exc}") from None
        if not any(where.within(root) for root in self.roots):
            raise ItemFailure(
                "uri_not_allowed",
                f"field 'audio_uri' {uri!r} resolves to {where.uri()}, outside the allowed "
                f"roots ({self.describe()}); add one with --allow-root",
            )
        return where.uri()


def covering_roots(uris: Iterable[str]) -> list[str]:
    """The fewest roots that allow every one of `uris`: their common folder or bucket prefix;
    where they share none (other buckets, other top folders, other protocols) one root per
    bucket or top folder, rather than a whole filesystem. URIs that can not be resolved are
    left out (no root allows them)."""
    folders: dict[str, set[str]] = {}
    for uri in uris:
        try:
            where = resolve(uri)
        except UriNotResolvable:
            continue
        folders.setdefault(where.protocol, set()).add(posixpath.dirname(where.path))
    roots = []
    for protocol, paths in sorted(folders.items()):
        common = posixpath.commonpath(sorted(paths))
        if common.strip("/"):
            tops = [common]
        else:  # nothing shared below the filesystem's or the store's top
            leading = "/" if protocol == LOCAL else ""
            tops = sorted({leading + p.strip("/").split("/")[0] for p in paths})
        roots += [Location(protocol, top).uri() for top in tops]
    return roots


# --- storage options -----------------------------------------------------------------------


def parse_storage_options(text: str) -> dict[str, Any]:
    """`--storage-options` JSON: an object of fsspec keyword arguments."""
    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--storage-options is not valid JSON: {exc.msg}") from None
    if not isinstance(options, dict):
        raise ValueError("--storage-options must be a JSON object of fsspec options")
    return options


def redact(options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The same keys with every value hidden, nested objects included: which options a run was
    given is worth recording; their values (keys, secrets, tokens) never are."""
    if options is None:
        return None
    return {
        name: redact(value) if isinstance(value, Mapping) else REDACTED
        for name, value in options.items()
    }


def remote_protocols(uris: Iterable[str]) -> list[str]:
    """The object-store protocols among `uris` (local paths need no options)."""
    found: list[str] = []
    for uri in uris:
        protocol, sep, _ = uri.partition("://")
        protocol = protocol.lower()
        if sep and "::" not in uri and protocol not in LOCAL_PROTOCOLS and protocol not in found:
            found.append(protocol)
    return found


def _env_name(protocol: str) -> str:
    return f"FSSPEC_{protocol.upper()}"


@contextmanager
def storage_options_installed(
    options: Mapping[str, Any] | None, uris: Iterable[str]
) -> Iterator[None]:
    """Make `options` fsspec's defaults for the object-store protocols of `uris` while the
    block runs, in this process (fsspec.config.conf) and in processes it starts (fsspec reads
    `FSSPEC_<PROTOCOL>` JSON from the environment when it is imported). Explicit keyword
    arguments still win over them. Restored afterwards, so one run's credentials never reach
    the next job in the same process."""
    if not options:
        yield
        return
    saved: dict[str, tuple[dict | None, str | None]] = {}
    for protocol in remote_protocols(uris):
        conf = fsspec.config.conf.get(protocol)
        saved[protocol] = (
            dict(conf) if conf is not None else None,
            os.environ.get(_env_name(protocol)),
        )
        fsspec.config.conf[protocol] = {**(conf or {}), **options}
        os.environ[_env_name(protocol)] = json.dumps(fsspec.config.conf[protocol])
    try:
        yield
    finally:
        for protocol, (conf, env) in saved.items():
            if conf is None:
                fsspec.config.conf.pop(protocol, None)
            else:
                fsspec.config.conf[protocol] = conf
            if env is None:
                os.environ.pop(_env_name(protocol), None)
            else:
                os.environ[_env_name(protocol)] = env
