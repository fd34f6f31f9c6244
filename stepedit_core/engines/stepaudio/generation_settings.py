"""What the release's `generate()` call samples with, for a given model folder.

The release calls `generate()` with `max_length=8192, temperature=0.7, do_sample=True` and its
repetition rule as a logits processor, and nothing else. Every other setting comes from the
model's generation config as transformers 4.53 (the release's pin) builds it when the model is
loaded:

- the folder's `generation_config.json` when it has one;
- otherwise the generation keys of `config.json` over transformers' global defaults (top-k 50,
  top-p 1.0, no repetition penalty...), EOS from `config.json`'s `eos_token_id`;
- a `generation_config.json` written from the model config (`"_from_model_config": true`) is
  replaced by `config.json`'s keys when `config.json` sets any generation key to a non-default
  value, as transformers does at `generate()` time.

`sampling_config` turns that into a `SamplingConfig`. A setting that would change the sampled ids
and that the engine's generation loop does not implement (beam search, typical-p, banned words,
...) refuses the model instead of being silently ignored. Engine options
(`stepaudio_temperature`, `stepaudio_top_k`, `stepaudio_greedy`) override everything.

One difference is kept on purpose: a `max_new_tokens` in the file caps the new ids, but the
prompt plus output never exceeds the 8192 positions the model was trained for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stepedit_core.engines.stepaudio.llm import MAX_LENGTH, SamplingConfig
from stepedit_core.engines.stepaudio.prompts import EOT_ID

GENERATION_CONFIG = "generation_config.json"

# The keyword arguments of the release's call: they win over any file.
RELEASE_CALL: dict[str, Any] = {"max_length": MAX_LENGTH, "temperature": 0.7, "do_sample": True}

# transformers 4.53 defaults of the settings the engine applies.
APPLIED_DEFAULTS: dict[str, Any] = {
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "repetition_penalty": 1.0,
    "min_length": 0,
    "min_new_tokens": None,
    "max_new_tokens": None,
    "eos_token_id": None,
}

# Settings that change the sampled ids and that the engine does not implement, with the
# transformers 4.53 value that leaves them off. A file that sets one otherwise is refused.
UNSUPPORTED_DEFAULTS: dict[str, Any] = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "penalty_alpha": None,
    "dola_layers": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "sequence_bias": None,
    "guidance_scale": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "remove_invalid_values": False,
    "watermarking_config": None,
    "stop_strings": None,
    "max_time": None,
    "num_return_sequences": 1,
}

# The legacy generation keys a transformers 4.53 model config carries, with their defaults.
_LEGACY_CONFIG_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "num_beams": 1,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "num_return_sequences": 1,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "remove_invalid_values": False,
    "exponential_decay_length_penalty": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
}


class GenerationSettingsError(ValueError):
    """The folder's generation settings ask for something the engine can not reproduce."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GenerationSettingsError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GenerationSettingsError(f"{path} does not hold a JSON object")
    return data


def _config_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """The generation settings a model config contributes (None values do not count)."""
    keys = set(APPLIED_DEFAULTS) | set(UNSUPPORTED_DEFAULTS) | set(RELEASE_CALL)
    return {k: v for k, v in config.items() if k in keys and v is not None}


def folder_settings(model_dir: str | Path) -> tuple[dict[str, Any], str]:
    """The generation settings transformers 4.53 loads for this folder, before the release's
    call overrides any, and where they came from (a file name)."""
    folder = Path(model_dir)
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.exists() else {}
    from_config = _config_keys(config)
    gen_path = folder / GENERATION_CONFIG
    if not gen_path.exists():
        return from_config, "config.json"
    settings = _read_json(gen_path)
    legacy = {k: v for k, v in from_config.items() if _LEGACY_CONFIG_DEFAULTS.get(k, v) != v}
    if settings.get("_from_model_config") and legacy:
        return from_config, "config.json"
    return settings, GENERATION_CONFIG


def effective_settings(model_dir: str | Path) -> tuple[dict[str, Any], str]:
    """`folder_settings` with the release's call applied and defaults filled in."""
    settings, source = folder_settings(model_dir)
    merged = {**APPLIED_DEFAULTS, **UNSUPPORTED_DEFAULTS}
    merged.update({k: v for k, v in settings.items() if not k.startswith("_")})
    merged.update(RELEASE_CALL)
    return merged, source


def _eos_ids(value: Any, source: str) -> tuple[int, ...]:
    if value is None:
        return (EOT_ID,)
    ids = [value] if isinstance(value, int) else value
    if not isinstance(ids, list) or not ids or not all(isinstance(i, int) for i in ids):
        raise GenerationSettingsError(f"{source}: eos_token_id {value!r} is not an id or ids")
    return tuple(ids)


def sampling_config(
    model_dir: str | Path, options: Mapping[str, Any] | None = None
) -> SamplingConfig:
    """The `SamplingConfig` that reproduces the release's `generate()` call on this folder;
    `options` (engine options: `stepaudio_temperature`, `stepaudio_top_k`, `stepaudio_greedy`)
    override it. Raises GenerationSettingsError for settings the engine can not reproduce."""
    options = options or {}
    settings, source = effective_settings(model_dir)
    unsupported = sorted(
        f"{key}={settings[key]!r}"
        for key, off in UNSUPPORTED_DEFAULTS.items()
        if settings.get(key) != off and not (key == "guidance_scale" and settings[key] == 1)
    )
    if unsupported:
        raise GenerationSettingsError(
            f"{Path(model_dir) / source} sets {', '.join(unsupported)}, which the release's "
            "generate() call would apply and this engine does not implement"
        )
    top_k = settings["top_k"]
    if options.get("stepaudio_top_k") is not None:
        top_k = options["stepaudio_top_k"]
    temperature = options.get("stepaudio_temperature")
    max_new = settings["max_new_tokens"]
    return SamplingConfig(
        max_length=MAX_LENGTH,
        temperature=float(RELEASE_CALL["temperature"] if temperature is None else temperature),
        top_k=int(top_k) if top_k else None,
        top_p=float(settings["top_p"] if settings["top_p"] is not None else 1.0),
        min_p=None if settings["min_p"] is None else float(settings["min_p"]),
        repetition_penalty=float(settings["repetition_penalty"] or 1.0),
        greedy=bool(options.get("stepaudio_greedy", False)),
        eos_ids=_eos_ids(settings["eos_token_id"], source),
        min_length=int(settings["min_length"] or 0),
        min_new_tokens=int(settings["min_new_tokens"] or 0),
        max_new_tokens=None if max_new is None else int(max_new),
    )


def describe(cfg: SamplingConfig) -> dict[str, Any]:
    """The settings that decide the sampled ids, for logs and `stepedit validate`."""
    return {
        "temperature": cfg.temperature,
        "top_k": cfg.top_k,
        "top_p": cfg.top_p,
        "min_p": cfg.min_p,
        "repetition_penalty": cfg.repetition_penalty,
        "eos_ids": list(cfg.eos_ids),
        "min_length": cfg.min_length,
        "max_new_tokens": cfg.max_new_tokens,
        "greedy": cfg.greedy,
    }
