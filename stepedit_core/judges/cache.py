"""Verdicts remembered across runs: the same audio, prompt and judge model are never asked twice.

The cache lives under the output root (`OUT/_judge_cache/`), one small JSON object per key,
so every run under that root shares it and it works the same on local disk and object storage.
Only answers are cached (the judge's text), never failures: a failed request is asked again.
"""

from __future__ import annotations

import hashlib
import json
import posixpath

from stepedit_core.foundation.store import RunStore

CACHE_DIR = "_judge_cache"


def cache_key(audio_sha256: str, prompt_sha256: str, model: str) -> str:
    material = json.dumps([audio_sha256, prompt_sha256, model])
    return hashlib.sha256(material.encode()).hexdigest()


class VerdictCache:
    def __init__(self, out: str) -> None:
        # a RunStore rooted at OUT/_judge_cache gives atomic writes and retries for free
        self.store = RunStore(out, CACHE_DIR)

    def _path(self, key: str) -> str:
        return posixpath.join(self.store.root, key[:2], f"{key}.json")

    def get(self, key: str) -> str | None:
        path = self._path(key)
        if not self.store.exists(path):
            return None
        return str(self.store.read_json(path)["answer"])

    def put(self, key: str, answer: str) -> None:
        self.store.write_json(self._path(key), {"answer": answer})
