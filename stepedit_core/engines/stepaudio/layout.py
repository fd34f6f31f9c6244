"""The published model folder layout that `--models DIR` must hold, and what is missing from it.

Only the file system is read here (no torch, no model code), so `stepedit validate` can check a
folder cheaply before any work is planned.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

TOKENIZER_DIR = "Step-Audio-Tokenizer"
EDITX_DIR = "Step-Audio-EditX"
PARAFORMER_DIR = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
COSYVOICE_DIR = "CosyVoice-300M-25Hz"

PARAFORMER_FILES = (
    "model.pt",
    "config.yaml",
    "am.mvn",
    "configuration.json",
    "seg_dict",
    "tokens.json",
    "tokens.txt",
)
_TOKENIZER_FILES = (
    "linguistic_tokenizer.npy",
    "speech_tokenizer_v1.onnx",
    *(f"{PARAFORMER_DIR}/{name}" for name in PARAFORMER_FILES),
)
_EDITX_FILES = (
    "config.json",
    "configuration_step1.py",
    "modeling_step1.py",
    "tokenizer.model",
    "tokenizer_config.json",
    *(
        f"{COSYVOICE_DIR}/{name}"
        for name in ("cosyvoice.yaml", "flow.pt", "hift.pt", "campplus.onnx")
    ),
)
_WEIGHTS_INDEX = "model.safetensors.index.json"
_LFS_MARK = b"version https://git-lfs"
# Files that are large in the real release; a tiny file starting with the LFS header is a
# pointer left by a clone without `git lfs pull`.
_LARGE_SUFFIXES = (".safetensors", ".onnx", ".pt", ".npy", ".model")


def tokenizer_dir(models_dir: str | Path) -> Path:
    return Path(models_dir) / TOKENIZER_DIR


def llm_dir(models_dir: str | Path) -> Path:
    return Path(models_dir) / EDITX_DIR


def cosyvoice_dir(models_dir: str | Path) -> Path:
    return Path(models_dir) / EDITX_DIR / COSYVOICE_DIR


def required_files() -> list[str]:
    """Paths (relative to the models folder) that must exist, weights shards aside."""
    return [f"{TOKENIZER_DIR}/{f}" for f in _TOKENIZER_FILES] + [
        f"{EDITX_DIR}/{f}" for f in _EDITX_FILES
    ]


def _problem(path: Path) -> str | None:
    """None when `path` is a usable file, else why not."""
    if not path.is_file():
        return "missing"
    if path.suffix in _LARGE_SUFFIXES and path.stat().st_size < 1024:
        with path.open("rb") as handle:
            if handle.read(len(_LFS_MARK)) == _LFS_MARK:
                return "a Git LFS pointer, not the file (run `git lfs pull`)"
    return None


def _weight_files(root: Path) -> tuple[list[str], list[str]]:
    """(shard paths relative to the models folder, problems reading the index)."""
    editx = root / EDITX_DIR
    index = editx / _WEIGHTS_INDEX
    if not index.is_file():
        single = editx / "model.safetensors"
        if single.is_file():
            return [f"{EDITX_DIR}/model.safetensors"], []
        return [f"{EDITX_DIR}/{_WEIGHTS_INDEX}"], []
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted({str(name) for name in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return [], [f"{EDITX_DIR}/{_WEIGHTS_INDEX} (unreadable: {exc})"]
    if not shards:
        return [], [f"{EDITX_DIR}/{_WEIGHTS_INDEX} (names no weight files)"]
    return [f"{EDITX_DIR}/{_WEIGHTS_INDEX}"] + [f"{EDITX_DIR}/{s}" for s in shards], []


def missing_files(models_dir: str | Path | None) -> list[str]:
    """Every required path that is absent or unusable, relative to `models_dir`.

    Weight shards are the ones `model.safetensors.index.json` names (or a single
    `model.safetensors`). A problem other than absence is appended in parentheses.
    An empty list means the folder is complete.
    """
    if models_dir is None:
        return required_files() + [f"{EDITX_DIR}/{_WEIGHTS_INDEX}"]
    root = Path(models_dir)
    weights, problems = _weight_files(root)
    missing: list[str] = []
    for rel in required_files() + weights:
        why = _problem(root / rel)
        if why == "missing":
            missing.append(rel)
        elif why:
            missing.append(f"{rel} ({why})")
    return missing + problems


def expected_layout() -> str:
    """The folder layout `--models DIR` must hold, as a tree."""
    para = "\n".join(f"        {name}" for name in PARAFORMER_FILES)
    return (
        "DIR/\n"
        f"  {TOKENIZER_DIR}/\n"
        "    linguistic_tokenizer.npy        1024 x 512 k-means centroids (vq02)\n"
        "    speech_tokenizer_v1.onnx        vq06 tokenizer\n"
        f"    {PARAFORMER_DIR}/\n"
        f"{para}\n"
        f"  {EDITX_DIR}/\n"
        '    config.json                     architectures ["Step1ForCausalLM"]\n'
        "    configuration_step1.py\n"
        "    modeling_step1.py\n"
        f"    {_WEIGHTS_INDEX}    and the model-*.safetensors shards it names\n"
        "    tokenizer.model\n"
        "    tokenizer_config.json\n"
        f"    {COSYVOICE_DIR}/\n"
        "      cosyvoice.yaml\n"
        "      flow.pt\n"
        "      hift.pt\n"
        "      campplus.onnx\n"
        "Download: huggingface.co/stepfun-ai/Step-Audio-Tokenizer and "
        "huggingface.co/stepfun-ai/Step-Audio-EditX (with git lfs)."
    )


def not_ready_message(models_dir: str | Path | None) -> str | None:
    """A message naming what is missing, or None when the folder is complete."""
    if models_dir is None:
        return (
            "engine step-audio-editx needs --models DIR with the published model folders:\n"
            + expected_layout()
        )
    root = Path(models_dir)
    if not root.is_dir():
        return f"models folder {root} does not exist; it must hold:\n" + expected_layout()
    missing = missing_files(root)
    if not missing:
        return None
    shown = missing[:25]
    more = f"\n  ... and {len(missing) - len(shown)} more" if len(missing) > len(shown) else ""
    return (
        f"models folder {root} is incomplete; missing:\n"
        + "\n".join(f"  {m}" for m in shown)
        + more
        + "\nexpected layout:\n"
        + expected_layout()
    )


FINGERPRINT_SAMPLE = 1 << 20  # bytes hashed at each end of a large file


def fingerprint(models_dir: str | Path) -> str:
    """A fingerprint of the model folders, for the audit trail: sha256 over every file's
    relative path, size, and content (small files whole; weights by their first and last MiB,
    so a 7 GB folder is fingerprinted in milliseconds yet a swapped or truncated file shows)."""
    root = Path(models_dir)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with path.open("rb") as handle:
            if size <= 2 * FINGERPRINT_SAMPLE:
                digest.update(handle.read())
            else:
                digest.update(handle.read(FINGERPRINT_SAMPLE))
                handle.seek(size - FINGERPRINT_SAMPLE)
                digest.update(handle.read(FINGERPRINT_SAMPLE))
    return digest.hexdigest()
