"""Audio by reference: a published, content-addressed FLAC object named by URI and hash.

Round audio of a long chapter is too big to travel inside the item that is pickled at every
hop between Ray pools, so a stage that produces audio streams it into an `AudioSink`, which
publishes it as `<directory>/<sha256>.flac` (in the run's store) and returns an `AudioRef`:
the object's URI, its sha256 and its shape. The reference is what items and records carry;
a stage that needs samples reads them from the object, whole (`load`), by range (`read`) or
block by block (`blocks`), so memory stays bounded by the block size.

Objects are opened through fsspec, so `s3://` works: a run's storage options are installed
as fsspec's per-protocol defaults and reach worker processes through the environment
(`access.storage_options_installed`); a reference never carries credentials.

Publishing is content-addressed: an object is written once under its hash and never written
over; a second sink with the same content finds it there and only returns the reference.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import soundfile as sf

from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.foundation.retry import retrying
from stepedit_core.foundation.sources import DECODED_FACTOR, MB, InputLimits, within

BLOCK_FRAMES = 1 << 16  # about 1.5 s at 44.1 kHz: small enough for any worker
# audio longer than this travels between stages by reference when the item has a store (a
# long source, a long round output): about 2.6 MB of 44.1 kHz float32, more than a short line
# ever needs to carry; shorter audio rides along, which costs less than a store round trip
BY_REFERENCE_OVER_S = 15.0
HASH_CHUNK = 1 << 20
LOCAL = ("file", "local")


@dataclass(frozen=True)
class AudioRef:
    """A FLAC object in a store: where it is, what its bytes hash to, and its shape."""

    uri: str
    sha256: str
    sample_rate: int
    frames: int
    channels: int

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickled as its five fields only (it travels between Ray pools on every item)
        return (AudioRef, (self.uri, self.sha256, self.sample_rate, self.frames, self.channels))

    @property
    def duration(self) -> float:
        return self.frames / float(self.sample_rate)

    def _open(self) -> Any:
        fs, path = fsspec.core.url_to_fs(self.uri)
        return retrying(lambda: fs.open(path, "rb"), f"opening {self.uri}")

    def blocks(self, frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """The samples in order, as float32 (n, channels) arrays of at most `frames` rows."""
        with self._open() as handle, sf.SoundFile(handle) as sound:
            yield from sound.blocks(blocksize=frames, dtype="float32", always_2d=True)

    def read(self, start: int = 0, frames: int | None = None) -> np.ndarray:
        """`frames` samples from frame `start` (to the end when None), float32 (n, channels)."""
        if start < 0 or start > self.frames:
            raise ValueError(f"start {start} is outside 0..{self.frames} of {self.uri}")
        count = self.frames - start if frames is None else min(frames, self.frames - start)
        with self._open() as handle, sf.SoundFile(handle) as sound:
            sound.seek(start)
            return sound.read(count, dtype="float32", always_2d=True)

    def load(self) -> Audio:
        return Audio(self.read(), self.sample_rate)


def load_audio(value: Audio | AudioRef | None) -> Audio | None:
    """Samples of a stage's input, whichever way it travels: an `AudioRef` is read here."""
    if isinstance(value, AudioRef):
        return value.load()
    return value


def resolve_ref(ref: str, run_uri: str) -> str:
    """The URI of a run-relative reference (`round-audio/<sha256>.flac`, as records keep them)
    in the run folder at `run_uri`; an absolute URI or path is its own."""
    return ref if "://" in ref or ref.startswith("/") else posixpath.join(run_uri, ref)


def read_object(uri: str) -> bytes:
    """An object's bytes, whole (for readers that need a file's bytes, not samples)."""
    fs, path = fsspec.core.url_to_fs(uri)
    return retrying(lambda: fs.cat_file(path), f"reading {uri}")


def sha256_file(uri: str) -> str:
    """The sha256 of an object's bytes, read in chunks (never whole)."""
    fs, path = fsspec.core.url_to_fs(uri)

    def digest() -> str:
        hasher = hashlib.sha256()
        with fs.open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()

    return retrying(digest, f"hashing {uri}")


class AudioSink:
    """Streams samples to a 24-bit FLAC file on local disk; `close` publishes it as
    `directory/<sha256>.flac` and returns its `AudioRef` (also `.ref` afterwards).

    The hash is taken from the finished local file, read back in chunks: the FLAC header is
    only complete (total frames, MD5 of the samples) once the encoder closes it, so bytes
    hashed while they were written would not be the object's."""

    def __init__(self, sample_rate: int, channels: int, directory: str) -> None:
        self.sample_rate, self.channels, self.directory = int(sample_rate), int(channels), directory
        handle, self._tmp = tempfile.mkstemp(prefix="stepedit-sink-", suffix=".flac")
        os.close(handle)
        self._sound: sf.SoundFile | None = sf.SoundFile(
            self._tmp, "w", self.sample_rate, self.channels, "PCM_24", format="FLAC"
        )
        self.frames = 0
        self.ref: AudioRef | None = None

    def write(self, block: np.ndarray) -> None:
        """Append float32 samples shaped (n, channels) (or (n,) for mono); clipped to [-1, 1]
        because FLAC stores integers."""
        if self._sound is None:
            raise ValueError("this AudioSink is closed")
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[:, None]
        if block.shape[1] != self.channels:
            raise ValueError(f"block has {block.shape[1]} channels, the sink {self.channels}")
        self._sound.write(np.clip(block, -1.0, 1.0))
        self.frames += int(block.shape[0])

    def close(self) -> AudioRef:
        if self.ref is not None:
            return self.ref
        if self._sound is None:
            raise ValueError("this AudioSink was abandoned")
        try:
            self._sound.close()
            self._sound = None
            digest = sha256_file(self._tmp)
            uri = publish_file(self._tmp, self.directory, f"{digest}.flac")
            self.ref = AudioRef(uri, digest, self.sample_rate, self.frames, self.channels)
            return self.ref
        finally:
            self.abandon()

    def abandon(self) -> None:
        """Drop what was written (nothing is published); safe to call more than once."""
        if self._sound is not None:
            self._sound.close()
            self._sound = None
        with contextlib.suppress(OSError):
            os.remove(self._tmp)

    def __enter__(self) -> AudioSink:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def publish(audio: Audio, directory: str, block_frames: int = BLOCK_FRAMES) -> AudioRef:
    """An in-memory `Audio` published as a content-addressed FLAC object."""
    with AudioSink(audio.sample_rate, audio.channels, directory) as sink:
        for start in range(0, audio.frames, block_frames):
            sink.write(audio.samples[start : start + block_frames])
    assert sink.ref is not None
    return sink.ref


def publish_file(local_path: str, directory: str, name: str) -> str:
    """Copy a local file to `directory/name` unless an object is already there (content
    addressed: same name, same bytes); returns the object's URI. Readers never see half an
    object: on local disk it is written under a temporary name and renamed, and an object
    store's upload is all-or-nothing."""
    fs, root = fsspec.core.url_to_fs(directory)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    target = posixpath.join(root.rstrip("/"), name)
    uri = target if protocol in LOCAL else f"{protocol}://{target}"

    def put() -> None:
        fs.invalidate_cache(posixpath.dirname(target))
        if fs.exists(target):
            return  # written once, never over
        if protocol in LOCAL:
            fs.makedirs(root, exist_ok=True)
            tmp = posixpath.join(root, f".{name}.tmp-{uuid.uuid4().hex}")
            try:
                fs.put_file(local_path, tmp)
                fs.mv(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                raise
        else:
            fs.put_file(local_path, target)

    retrying(put, f"publishing {uri}")
    return uri


def header_seconds(uri: str) -> float | None:
    """A source's duration from its header alone (None when it can not be read: the full
    load then says why, with its own failure code)."""
    try:
        fs, path = fsspec.core.url_to_fs(uri)
        with fs.open(path, "rb") as handle:
            info = sf.info(handle)
        return float(info.frames) / float(info.samplerate)
    except Exception:  # noqa: BLE001 - only a hint; the load that follows reports the problem
        return None


def reference_source(uri: str, limits: InputLimits) -> AudioRef:
    """A long source clip passed on by reference, never held whole: its bytes hashed in
    chunks, its shape read from its header, its samples checked block by block for NaN/inf;
    within `limits` (size before reading, claimed decoded size, read timeout) as a whole load
    is (sources.py). Failures carry the same codes as `audio.load`'s."""

    def probe() -> AudioRef:
        fs, path = fsspec.core.url_to_fs(uri)
        info = retrying(lambda: fs.info(path), f"looking up {uri}")
        if info.get("type") == "directory":
            raise ItemFailure("unreadable_file", f"audio_uri is a directory, not a file: {uri}")
        size = info.get("size")
        if size is not None and size > limits.max_bytes:
            raise limits.too_large(uri, int(size))
        if not size:
            raise ItemFailure("empty_file", f"audio file is empty (0 bytes): {uri}")
        digest = sha256_file(uri)
        try:
            with fs.open(path, "rb") as handle, sf.SoundFile(handle) as sound:
                frames, rate, channels = int(sound.frames), sound.samplerate, sound.channels
                claimed = frames * channels * 4
                if claimed > limits.max_decoded_bytes:
                    raise ItemFailure(
                        "file_too_large",
                        f"field 'audio_uri' {uri}: its header claims {frames} frames x "
                        f"{channels} channels ({claimed} bytes decoded), over "
                        f"{limits.max_decoded_bytes // MB} MB ({DECODED_FACTOR} x "
                        "--max-input-mb)",
                    )
                bad = sum(
                    int((~np.isfinite(block)).sum())
                    for block in sound.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True)
                )
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise ItemFailure("not_audio", f"not a readable audio file: {uri} ({exc})") from exc
        if frames == 0:
            raise ItemFailure("empty_audio", f"audio file has no samples: {uri}")
        if bad:
            raise ItemFailure("non_finite_samples", f"{bad} NaN/inf samples in {uri}")
        return AudioRef(uri, digest, int(rate), frames, int(channels))

    try:
        return within(
            probe,
            limits.read_timeout_s,
            lambda: ItemFailure(
                "read_timeout",
                f"reading {uri} took longer than {limits.read_timeout_s:g} s (--read-timeout); "
                "abandoned",
            ),
        )
    except FileNotFoundError as exc:
        raise ItemFailure("missing_file", f"audio file not found: {uri}") from exc
    except OSError as exc:
        raise ItemFailure("unreadable_file", f"cannot read {uri}: {exc}") from exc
