"""Adapter to the components that only the public Step-Audio-EditX repository provides.

The dual-codebook tokenizer (its FunASR Paraformer encoder path and the vq06 ONNX tokenizer) and
the CosyVoice flow-matching decoder with its vocoder and feature front end have no package on
PyPI, so they are imported from a checkout the user names (`--stepaudio-src DIR` or the
environment variable STEPEDIT_STEPAUDIO_SRC). Everything else in this engine is our own code.

Interfaces used (those of the public repository):
- `tokenizer.StepAudioTokenizer(encoder_path, model_source=ModelSource.LOCAL)`
  and `.wav2token(wav: Tensor[1, n], sample_rate) -> (ids, vq02_codes, vq06_codes)`;
- `model_loader.ModelSource`;
- `stepvocoder.cosyvoice2.cli.frontend.CosyVoiceFrontEnd(mel_conf, campplus_model,
  speech_tokenizer_model, onnx_provider)` with `.extract_speech_feat(wav, sr) -> (feat[1, T, 80],
  len)` and `.extract_spk_embedding(wav, sr) -> Tensor[1, 192]`;
- `stepvocoder.cosyvoice2.cli.cosyvoice.CosyVoice(model_dir)` with
  `.token2wav_nonstream(token[1, n], prompt_token[1, m], prompt_feat[1, T, 80],
  embedding[1, 192]) -> Tensor[1, samples]` at 24 kHz (batch size 1 only).

Tests (and anyone else) may inject stand-ins instead: `EngineOptions.stepaudio_factories`
maps "audio_tokenizer", "frontend" and "decoder" to callables taking the component's folder
(Step-Audio-Tokenizer/ for the first, CosyVoice-300M-25Hz/ for the others) and returning an
object with the interface above. Factories must be picklable (module-level functions) to travel
to Ray actors.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from stepedit_core.engines.base import EngineNotReady

ENV_VAR = "STEPEDIT_STEPAUDIO_SRC"
UPSTREAM_REPO = "https://github.com/stepfun-ai/Step-Audio-EditX"
REQUIRED_SOURCES = (
    "tokenizer.py",
    "model_loader.py",
    "stepvocoder/cosyvoice2/cli/cosyvoice.py",
    "stepvocoder/cosyvoice2/cli/frontend.py",
)
FACTORY_KEYS = ("audio_tokenizer", "frontend", "decoder")

_IMPORT_LOCK = threading.Lock()


class UpstreamMissing(EngineNotReady):
    """The upstream checkout is absent, incomplete or cannot be imported: the run is refused
    (checked before any work, and again when a stage loads its models)."""


def resolve_src(option: str | None) -> str | None:
    """The checkout to use: the option, else the environment variable, else None."""
    value = option or os.environ.get(ENV_VAR) or None
    return str(Path(value).expanduser()) if value else None


def src_problem(src: str | None) -> str | None:
    """A message when `src` can not serve as the upstream checkout, else None."""
    if not src:
        return (
            "engine step-audio-editx needs a checkout of the public Step-Audio-EditX repository "
            f"for its audio tokenizer and decoder: git clone {UPSTREAM_REPO}, install its "
            f"requirements, then pass --stepaudio-src DIR (or set {ENV_VAR}=DIR)"
        )
    root = Path(src)
    if not root.is_dir():
        return f"Step-Audio-EditX checkout {root} does not exist (from --stepaudio-src/{ENV_VAR})"
    missing = [rel for rel in REQUIRED_SOURCES if not (root / rel).is_file()]
    if missing:
        return (
            f"{root} is not a Step-Audio-EditX checkout (clone {UPSTREAM_REPO}); missing: "
            + ", ".join(missing)
        )
    return None


def factories(given: dict[str, Callable[[Path], Any]]) -> dict[str, Callable[[Path], Any]]:
    """Injected component factories (`EngineOptions.stepaudio_factories`, may be empty)."""
    unknown = set(given) - set(FACTORY_KEYS)
    if unknown:
        raise ValueError(
            f"unknown stepaudio_factories keys {sorted(unknown)}; valid: {', '.join(FACTORY_KEYS)}"
        )
    return dict(given)


def _top_level_names(root: Path) -> set[str]:
    names = set()
    for entry in root.iterdir():
        if entry.suffix == ".py":
            names.add(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier():
            names.add(entry.name)
    return names


def _lives_under(module: ModuleType, root: Path) -> bool:
    locations = [getattr(module, "__file__", None), *list(getattr(module, "__path__", []) or [])]
    return any(loc and Path(loc).resolve().is_relative_to(root) for loc in locations)


def import_module(src: str, name: str) -> ModuleType:
    """Import `name` from the checkout at `src`.

    The checkout uses generic top-level module names (`tokenizer`, `utils`, `config`). Modules
    of those names already imported from elsewhere are set aside while the checkout's are
    imported, then put back, so neither side sees the other's module.
    """
    root = Path(src).resolve()
    problem = src_problem(str(root))
    if problem:
        raise UpstreamMissing(problem)
    with _IMPORT_LOCK:
        if str(root) in sys.path:
            sys.path.remove(str(root))
        sys.path.insert(0, str(root))
        ours = _top_level_names(root)
        displaced = {
            key: module
            for key, module in list(sys.modules.items())
            if key.split(".")[0] in ours and module is not None and not _lives_under(module, root)
        }
        for key in displaced:
            del sys.modules[key]
        try:
            return importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import-time failure means "not usable"
            raise UpstreamMissing(
                f"importing {name} from the Step-Audio-EditX checkout {root} failed: "
                f"{type(exc).__name__}: {exc}. Install the checkout's requirements "
                f"(pip install -r {root / 'requirements.txt'})"
            ) from exc
        finally:
            for key, module in displaced.items():
                sys.modules[key] = module


def load_audio_tokenizer(src: str, tokenizer_dir: Path) -> Any:
    """The public StepAudioTokenizer, loaded from the local Step-Audio-Tokenizer folder."""
    module = import_module(src, "tokenizer")
    model_loader = import_module(src, "model_loader")
    return module.StepAudioTokenizer(
        str(tokenizer_dir), model_source=model_loader.ModelSource.LOCAL
    )


def load_frontend(src: str, cosyvoice_dir: Path) -> Any:
    """The decoder's feature front end alone (24 kHz mel, CAM++ speaker embedding)."""
    module = import_module(src, "stepvocoder.cosyvoice2.cli.frontend")
    mel_conf = read_mel_conf(cosyvoice_dir / "cosyvoice.yaml", src)
    return module.CosyVoiceFrontEnd(
        mel_conf,
        campplus_model=str(cosyvoice_dir / "campplus.onnx"),
        speech_tokenizer_model=str(cosyvoice_dir / "speech_tokenizer_v1.onnx"),  # not opened
        onnx_provider="CPUExecutionProvider",
    )


def load_decoder(src: str, cosyvoice_dir: Path) -> Any:
    """The public CosyVoice wrapper (flow + vocoder + front end) for the folder."""
    module = import_module(src, "stepvocoder.cosyvoice2.cli.cosyvoice")
    return module.CosyVoice(str(cosyvoice_dir))


class _Tagged:
    """A hyperpyyaml tagged value (`!ref <name>`, `!new:...`) kept unevaluated."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


def _tagged_constructor(loader: Any, suffix: str, node: Any) -> _Tagged:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return _Tagged("!" + suffix, value)


def _resolve(value: Any, top: dict[str, Any], depth: int = 0) -> Any:
    if depth > 8:
        raise ValueError("reference chain too deep")
    if isinstance(value, _Tagged):
        text = str(value.value).strip()
        if value.tag == "!ref" and text.startswith("<") and text.endswith(">"):
            return _resolve(top[text[1:-1]], top, depth + 1)
        raise ValueError(f"cannot evaluate {value.tag} {text!r} without hyperpyyaml")
    if isinstance(value, dict):
        return {k: _resolve(v, top, depth + 1) for k, v in value.items()}
    return value


def read_mel_conf(yaml_path: Path, src: str | None = None) -> dict[str, Any]:
    """`mel_conf` of cosyvoice.yaml without building the models the file also describes.

    Plain `!ref <name>` references are resolved; anything fancier falls back to hyperpyyaml
    (which instantiates the whole file).
    """
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", _tagged_constructor)
    try:
        data = yaml.load(yaml_path.read_text(), Loader=_Loader)
        return dict(_resolve(data["mel_conf"], data))
    except (KeyError, ValueError, TypeError, yaml.YAMLError):
        pass
    if src:
        import_module(src, "stepvocoder")  # puts the checkout on sys.path for !new: targets
    try:
        from hyperpyyaml import load_hyperpyyaml
    except ImportError as exc:
        raise UpstreamMissing(
            f"cannot read mel_conf from {yaml_path}: install hyperpyyaml (a requirement of the "
            "Step-Audio-EditX checkout)"
        ) from exc
    with yaml_path.open() as handle:
        return dict(load_hyperpyyaml(handle)["mel_conf"])
