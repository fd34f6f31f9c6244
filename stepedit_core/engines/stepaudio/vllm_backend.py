"""The LLM through vLLM (>= 0.16 ships a Step1ForCausalLM implementation).

Used when vLLM is installed and `EngineOptions.llm_backend == "vllm"`. Prompts are framed with
the folder's own tokenizer through `text_tokenizer` (the same ids the transformers backend
feeds) and handed to vLLM as token ids; vLLM batches and schedules them itself. Settings match
the transformers backend (the same `SamplingConfig`): per-request seeds, temperature, top-k,
top-p, min-p, repetition penalty, stop at the EOS ids, minimum and maximum lengths, at most 8192
ids per request, and the repetition-aware rule as a vLLM logits processor. vLLM ties lm_head to
the embeddings when the config does not say otherwise, so `tie_word_embeddings` is overridden to
False here as well.

This module imports vllm at import time: import it only after checking that vllm is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from vllm import LLM, SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from stepedit_core.engines.stepaudio.llm import Generation, SamplingConfig
from stepedit_core.engines.stepaudio.text_tokenizer import load_text_tokenizer

_REPETITION_ARG = "stepedit_repetition"


class RepetitionAwareVLLMProcessor(AdapterLogitsProcessor):
    """Per request: over the last `window` ids of prompt + output, block a repeated last id."""

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params: SamplingParams) -> Any:
        args = (params.extra_args or {}).get(_REPETITION_ARG)
        if not args:
            return None
        window, threshold = int(args[0]), float(args[1])

        def apply(prompt_ids: list[int], output_ids: list[int], logits: torch.Tensor) -> Any:
            tail = (list(prompt_ids[-window:]) + list(output_ids))[-window:]
            if len(tail) < window:
                return logits
            last = tail[-1]
            if tail.count(last) / window > threshold:
                logits[last] = float("-inf")
            return logits

        return apply


class VLLMLLM:
    backend = "vllm"

    def __init__(
        self, model_dir: str | Path, gpu_memory_utilization: float, max_length: int = 8192
    ) -> None:
        self.model_dir = str(model_dir)
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_length = max_length
        self.engine: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        self.tokenizer = load_text_tokenizer(self.model_dir)
        self.engine = LLM(
            model=self.model_dir,
            trust_remote_code=True,
            dtype="bfloat16",
            max_model_len=self.max_length,
            gpu_memory_utilization=self.gpu_memory_utilization,
            skip_tokenizer_init=True,
            hf_overrides={"tie_word_embeddings": False},
            logits_processors=[RepetitionAwareVLLMProcessor],
            seed=0,
        )

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def generate(
        self, prompts: list[list[int]], seeds: list[int], cfg: SamplingConfig
    ) -> list[Generation]:
        params = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            budget = cfg.max_length - len(prompt)
            if cfg.max_new_tokens is not None:
                budget = min(budget, cfg.max_new_tokens)
            params.append(
                SamplingParams(
                    temperature=0.0 if cfg.greedy else cfg.temperature,
                    top_k=int(cfg.top_k or 0),
                    top_p=cfg.top_p,
                    min_p=cfg.min_p or 0.0,
                    repetition_penalty=cfg.repetition_penalty,
                    seed=int(seed) % (1 << 63),
                    max_tokens=max(1, budget),
                    min_tokens=max(cfg.min_new_tokens, cfg.min_length - len(prompt), 0),
                    stop_token_ids=list(cfg.eos_ids),
                    detokenize=False,
                    extra_args={_REPETITION_ARG: [cfg.repetition_window, cfg.repetition_threshold]},
                )
            )
        requests = [{"prompt_token_ids": list(p)} for p in prompts]
        outputs = self.engine.generate(requests, params, use_tqdm=False)
        results = []
        for prompt, output in zip(prompts, outputs, strict=True):
            ids = list(output.outputs[0].token_ids)
            finished = output.outputs[0].finish_reason == "stop"
            if ids and ids[-1] in cfg.eos_ids:
                ids.pop()
                finished = True
            results.append(Generation(ids, finished, len(prompt)))
        return results
