"""The audio LLM: loading from the local folder and batched generation across clips.

Generation is our own loop over the model's forward pass with a KV cache, so that

- many clips share one forward pass (left padding with id 0, attention masks, position ids
  from the mask);
- each clip samples from its own `torch.Generator` seeded with the clip's seed: a clip's tokens
  depend on its seed and prompt, not on which other clips share its batch (under greedy
  decoding, batched and one-at-a-time generation give the same ids);
- the public release's generation settings are kept: at most 8192 ids in all (prompt
  included), temperature 0.7, sampling, and its repetition-aware logits processor (see
  `block_repetition`); what the release's `generate()` call leaves to the model folder (top-k,
  top-p, EOS ids...) comes from the folder's `generation_config.json` the way transformers reads
  it (see `generation_settings`), top-k 50 and EOS id 3 without one;
- finished clips leave the batch, so one long clip does not keep the others computing.

The shipped Step1 model code uses ALiBi attention and *ignores* the attention mask it is given
(it rebuilds a plain causal bias in every layer), so padded batches would attend to the padding.
`enable_padded_attention` therefore replaces the forward of each of its attention modules with
one that takes the per-row ALiBi bias this loop builds (padding masked out); it computes the same
thing as the shipped code on an unpadded row. A model whose attention we do not know is run one
clip at a time (no padding, still through this loop).
"""

from __future__ import annotations

import inspect
import logging
import math
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepedit_core.engines.stepaudio.prompts import EOT_ID, PAD_ID
from stepedit_core.engines.stepaudio.text_tokenizer import load_text_tokenizer

log = logging.getLogger(__name__)

MAX_LENGTH = 8192


@dataclass(frozen=True)
class SamplingConfig:
    """What one `generate()` call samples with. The defaults are the release's call on a model
    folder without `generation_config.json`; `generation_settings.sampling_config` fills in what
    a folder's own file says."""

    max_length: int = MAX_LENGTH  # prompt + generated ids, per clip
    temperature: float = 0.7
    top_k: int | None = 50
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0  # over prompt + generated ids (1.0: off)
    greedy: bool = False
    repetition_window: int = 10
    repetition_threshold: float = 0.1
    eos_ids: tuple[int, ...] = (EOT_ID,)
    pad_id: int = PAD_ID
    min_length: int = 0  # EOS is suppressed while prompt + generated ids are fewer than this
    min_new_tokens: int = 0  # EOS is suppressed before this many new ids (benchmarks)
    max_new_tokens: int | None = None
    # Cap on the elements of one prefill chunk's attention bias (B*H*q*k) and logits (B*q*V).
    prefill_elements: int = 1 << 27
    # Rows that finished leave the running batch (their KV cache is dropped), so a long clip
    # does not keep the whole batch computing. Results are the same either way.
    drop_finished: bool = True


@dataclass
class Generation:
    ids: list[int]  # generated ids after the prompt, trailing EOS removed
    finished: bool  # the model emitted EOS (False: it hit the length cap)
    prompt_len: int


def block_repetition(window: Any, scores: Any, size: int = 10, threshold: float = 0.1) -> Any:
    """The repetition-aware processor of the public release, on a (B, <=size) id window.

    Over the last `size` ids of each sequence (prompt included while fewer ids were generated),
    when the last id makes up more than `threshold` of the window (it occurs at least twice for
    the defaults), its logit is set to -inf. Windows shorter than `size` are left alone.
    Modifies and returns `scores` (B, V).
    """
    import torch

    if window.shape[1] < size:
        return scores
    window = window[:, -size:]
    last = window[:, -1]
    counts = (window == last[:, None]).sum(dim=1)
    rows = torch.nonzero(counts.float() / size > threshold).flatten()
    if rows.numel():
        scores[rows, last[rows]] = float("-inf")
    return scores


class RepetitionAwareLogitsProcessor:
    """`block_repetition` with the transformers LogitsProcessor call signature."""

    def __init__(self, size: int = 10, threshold: float = 0.1) -> None:
        self.size, self.threshold = size, threshold

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        return block_repetition(input_ids, scores, self.size, self.threshold)


def alibi_slopes(n_heads: int) -> Any:
    """Per-head ALiBi slopes of the Step models (float32, shape (n_heads,))."""
    import torch

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = torch.pow(2.0 ** (-8.0 / closest), torch.arange(1, closest + 1))
    if closest < n_heads:
        extra = torch.pow(2.0 ** (-4.0 / closest), torch.arange(1, 1 + 2 * (n_heads - closest), 2))
        slopes = torch.cat([slopes, extra])
    return slopes.float()


def alibi_bias(
    key_mask: Any | None, start: int, q_len: int, k_len: int, slopes: Any, dtype: Any, device: Any
) -> Any:
    """Additive attention bias (B or 1, H, q_len, k_len) for queries at start..start+q_len-1.

    Step models use ALiBi with a square-root distance: bias = -sqrt(i - j) * slope for keys
    j <= i, -inf for later keys and for padding keys (`key_mask` False). A query that is itself
    padding sees only itself, so no row is empty (empty rows would turn into NaN).
    """
    import torch

    qpos = torch.arange(start, start + q_len, device=device)
    kpos = torch.arange(k_len, device=device)
    dist = qpos[:, None] - kpos[None, :]
    base = -torch.sqrt(dist.clamp(min=0).float())
    bias = base[None] * slopes.to(device)[:, None, None]
    allowed = (dist >= 0)[None]
    if key_mask is not None:
        keys = key_mask[:, :k_len]
        allowed = allowed & keys[:, None, :]
        query_is_pad = ~keys[:, start : start + q_len]
        allowed = allowed | ((dist == 0)[None] & query_is_pad[:, :, None])
    return bias[None].masked_fill(~allowed[:, None], float("-inf")).to(dtype)


def grouped_attention(q: Any, k: Any, v: Any, bias: Any) -> Any:
    """Attention of `q` (B, H, S, D) over grouped keys/values (B, G, T, D), H = G * R, query
    head h reading group h // R, with an additive `bias` (B or 1, H, S, T); returns (B, H, S, D).

    The R query heads of a group are stacked along the query axis, so the KV cache is read as
    it is stored instead of being repeated R times in memory every step. (SDPA's own
    `enable_gqa` falls back to its unfused math kernel whenever a float mask is given, as the
    ALiBi bias is, and that kernel repeats the keys itself.)"""
    import torch

    b, heads, s, d = q.shape
    groups = k.shape[1]
    per_group = heads // groups
    if per_group == 1:
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    q = q.reshape(b, groups, per_group * s, d)
    bias = bias.reshape(bias.shape[0], groups, per_group * s, bias.shape[-1])
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    return out.reshape(b, heads, s, d)


def _padded_alibi_attention(
    self: Any,
    x: Any,
    past_key_value: Any = None,
    attention_mask: Any = None,
    cache_position: Any = None,
) -> tuple[Any, None]:
    """Forward of a Step attention module that honours the bias passed as attention_mask."""
    b, s, _ = x.shape
    head_dim = getattr(self, "head_dim", None) or self.hidden_size // self.num_heads
    q = self.q_proj(x).view(b, s, self.num_heads, head_dim).transpose(1, 2)
    k = self.k_proj(x).view(b, s, self.num_groups, head_dim).transpose(1, 2)
    v = self.v_proj(x).view(b, s, self.num_groups, head_dim).transpose(1, 2)
    if past_key_value is not None:
        k, v = past_key_value.update(k, v, self.layer_idx, {"cache_position": cache_position})
    if attention_mask is None or attention_mask.dim() != 4:
        k_len = k.shape[2]
        attention_mask = alibi_bias(
            None, k_len - s, s, k_len, alibi_slopes(self.num_heads), q.dtype, q.device
        )
    out = grouped_attention(q, k, v, attention_mask.to(q.dtype))
    out = out.transpose(1, 2).reshape(b, s, self.num_heads * head_dim)
    return self.o_proj(out), None


_STEP_ATTENTION_ATTRS = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "num_heads",
    "num_groups",
    "layer_idx",
)


def enable_padded_attention(model: Any) -> int:
    """Patch the Step attention modules of `model`; returns how many were patched."""
    patched = 0
    for module in model.modules():
        if type(module).__name__ == "StepAttention" and all(
            hasattr(module, a) for a in _STEP_ATTENTION_ATTRS
        ):
            module.forward = types.MethodType(_padded_alibi_attention, module)
            patched += 1
    return patched


def attention_kind(model: Any) -> str:
    """How padding is expressed for `model`: "native" (2-D mask + position ids, transformers'
    own models), "alibi" (patched Step attention, 4-D bias) or "unpadded" (one clip at a time)."""
    kind = getattr(model, "_stepedit_attention", None)
    if kind:
        return kind
    if getattr(model.config, "model_type", "") == "step1":
        patched = enable_padded_attention(model)
        layers = getattr(model.config, "num_hidden_layers", patched)
        kind = "alibi" if patched and patched == layers else "unpadded"
        if kind == "unpadded":
            log.warning("Step1 attention modules not recognised: generating one clip at a time")
    else:
        kind = "native"
    model._stepedit_attention = kind
    return kind


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _row_selectable(cache: Any) -> bool:
    """Whether `select_rows` can keep a subset of the batch rows of this KV cache."""
    if hasattr(cache, "batch_select_indices"):
        return True
    return isinstance(cache, (tuple, list)) and all(
        isinstance(layer, (tuple, list)) for layer in cache
    )


def select_rows(cache: Any, rows: Any) -> Any:
    """The KV cache restricted to batch `rows` (a transformers Cache is changed in place; the
    legacy tuple-of-(key, value) form is rebuilt)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(rows)
        return cache
    return type(cache)(tuple(t.index_select(0, rows) for t in layer) for layer in cache)


def top_p_filter(scores: Any, top_p: float) -> Any:
    """Nucleus filter: keep the most likely ids whose probabilities add up to `top_p` (the id
    that crosses the line included, the most likely id always kept); others become -inf."""
    import torch

    ascending, order = torch.sort(scores, dim=-1)
    mass_below = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = mass_below <= 1.0 - top_p
    drop_sorted[..., -1] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, float("-inf"))


def min_p_filter(scores: Any, min_p: float) -> Any:
    """Drop ids less likely than `min_p` times the most likely id."""
    probs = scores.softmax(dim=-1)
    floor = min_p * probs.amax(dim=-1, keepdim=True)
    return scores.masked_fill(probs < floor, float("-inf"))


def penalise_seen(scores: Any, seen: Any, penalty: float) -> Any:
    """transformers' repetition penalty: every id already in the sequence has its logit divided
    by `penalty` when positive, multiplied when negative."""
    import torch

    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


class _Runner:
    """One batched generation call (state of a single batch).

    Per step the scores go through the steps of the release's `generate()` call, in its order:
    repetition penalty and minimum length (from the folder's generation config), the release's
    repetition rule, then, when sampling, temperature, top-k, top-p and min-p."""

    def __init__(self, model: Any, cfg: SamplingConfig) -> None:
        import torch

        self.model, self.cfg = model, cfg
        self.kind = attention_kind(model)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.heads = int(getattr(model.config, "num_attention_heads", 1))
        self.vocab = int(getattr(model.config, "vocab_size", 1))
        self.slopes = alibi_slopes(self.heads).to(self.device) if self.kind == "alibi" else None
        self.keep_last = _accepts(model, "logits_to_keep")
        # The shipped Step1 code takes `past_key_values`; transformers >= 5.2 models `cache`.
        self.cache_arg = (
            "cache"
            if _accepts(model, "cache") and not _accepts(model, "past_key_values")
            else "past_key_values"
        )
        self.eos = set(cfg.eos_ids)
        self.torch = torch

    def forward(self, ids: Any, mask: Any, start: int, past: Any) -> tuple[Any, Any]:
        torch = self.torch
        q_len = ids.shape[1]
        k_len = start + q_len
        positions = (mask[:, :k_len].long().cumsum(-1) - 1).clamp(min=0)[:, start:k_len]
        if self.kind == "alibi":
            attn = alibi_bias(mask, start, q_len, k_len, self.slopes, self.dtype, self.device)
        else:
            attn = mask[:, :k_len].long()
        kwargs: dict[str, Any] = dict(
            input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True
        )
        kwargs[self.cache_arg] = past
        if self.keep_last:
            kwargs["logits_to_keep"] = 1
        with torch.no_grad():
            out = self.model(**kwargs)
        cache = getattr(out, "cache", None)  # transformers >= 5.2 names it `cache`
        if cache is None:
            cache = out.past_key_values
        return out.logits[:, -1, :], cache

    def prefill(self, ids: Any, mask: Any) -> tuple[Any, Any]:
        batch, total = ids.shape
        per_query = batch * max(
            self.heads * total if self.kind == "alibi" else 1, 1 if self.keep_last else self.vocab
        )
        chunk = max(1, min(total, self.cfg.prefill_elements // max(1, per_query)))
        past, logits = None, None
        for start in range(0, total, chunk):
            logits, past = self.forward(ids[:, start : start + chunk], mask, start, past)
        return logits, past

    def process(
        self, scores: Any, window: Any, seen: Any, step: int, prompt_lens: list[int]
    ) -> Any:
        """The processors before sampling, for rows that have each generated `step` ids."""
        cfg = self.cfg
        if seen is not None:
            scores = penalise_seen(scores, seen, cfg.repetition_penalty)
        quiet = [
            row
            for row, n in enumerate(prompt_lens)
            if step < cfg.min_new_tokens or n + step < cfg.min_length
        ]
        if quiet:
            for eos in cfg.eos_ids:
                scores[quiet, eos] = float("-inf")
        return block_repetition(window, scores, cfg.repetition_window, cfg.repetition_threshold)

    def choose(self, scores: Any, generators: list[Any] | None, alive: list[bool]) -> Any:
        torch, cfg = self.torch, self.cfg
        if cfg.greedy or generators is None:
            return scores.argmax(dim=-1)
        scores = scores / cfg.temperature
        if cfg.top_k:
            k = min(int(cfg.top_k), scores.shape[-1])
            kth = torch.topk(scores, k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if cfg.top_p < 1.0:
            scores = top_p_filter(scores, cfg.top_p)
        if cfg.min_p is not None:
            scores = min_p_filter(scores, cfg.min_p)
        probs = torch.softmax(scores, dim=-1)
        picked = torch.full((scores.shape[0],), cfg.pad_id, dtype=torch.long, device=scores.device)
        for row, live in enumerate(alive):
            if live:
                picked[row] = torch.multinomial(probs[row], 1, generator=generators[row])[0]
        return picked

    def _seen(self, ids: Any, mask: Any, vocab: int) -> Any | None:
        """(B, V) ids present in each prompt, for the repetition penalty (None when off)."""
        if self.cfg.repetition_penalty == 1.0:
            return None
        torch = self.torch
        # Padding stands in for the row's last id (always a real one under left padding), so
        # it marks nothing that the prompt does not hold.
        real = torch.where(mask, ids, ids[:, -1:]).clamp(0, vocab - 1)
        seen = torch.zeros((ids.shape[0], vocab), dtype=torch.bool, device=self.device)
        return seen.scatter_(1, real, True)

    def run(self, prompts: list[list[int]], seeds: list[int]) -> list[Generation]:
        torch, cfg = self.torch, self.cfg
        batch = len(prompts)
        lengths = [len(p) for p in prompts]
        total = max(lengths)
        ids = torch.full((batch, total), cfg.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, total), dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, total - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, total - len(prompt) :] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        limits = [cfg.max_length - n for n in lengths]
        if cfg.max_new_tokens is not None:
            limits = [min(limit, cfg.max_new_tokens) for limit in limits]
        out: list[list[int]] = [[] for _ in prompts]
        finished = [False] * batch
        if not any(limit > 0 for limit in limits):
            return [Generation([], False, n) for n in lengths]
        generators = None
        if not cfg.greedy:
            generators = [
                torch.Generator(device=self.device).manual_seed(int(s) % (1 << 63)) for s in seeds
            ]
        logits, past = self.prefill(ids, mask)
        # Row r of the running batch generates for prompt slots[r]. A row that is done leaves
        # the batch when its cache can be cut; otherwise it stays, fed padding, masked out.
        slots = list(range(batch))
        alive = [limit > 0 for limit in limits]
        window = ids[:, -cfg.repetition_window :]
        seen = self._seen(ids, mask, logits.shape[-1])
        droppable = cfg.drop_finished and _row_selectable(past)
        step = 0
        while True:
            scores = self.process(logits.float(), window, seen, step, [lengths[i] for i in slots])
            row_generators = None if generators is None else [generators[i] for i in slots]
            picked = self.choose(scores, row_generators, alive).tolist()
            for row, slot in enumerate(slots):
                if not alive[row]:
                    continue
                token = int(picked[row])
                if token in self.eos:
                    finished[slot] = True
                    alive[row] = False
                    continue
                out[slot].append(token)
                if len(out[slot]) >= limits[slot]:
                    alive[row] = False
            step += 1
            if not any(alive):
                break
            fed = [int(picked[r]) if alive[r] else cfg.pad_id for r in range(len(slots))]
            if droppable and not all(alive):
                keep = [r for r, live in enumerate(alive) if live]
                rows = torch.tensor(keep, dtype=torch.long, device=self.device)
                try:
                    past = select_rows(past, rows)
                except NotImplementedError:  # a cache type that can not cut rows: keep them
                    droppable = False
                else:
                    mask, window = mask[rows], window[rows]
                    seen = None if seen is None else seen[rows]
                    slots = [slots[r] for r in keep]
                    fed = [fed[r] for r in keep]
                    alive = [True] * len(keep)
            live = torch.tensor(alive, dtype=torch.bool, device=self.device)
            fed_ids = torch.tensor(fed, dtype=torch.long, device=self.device)[:, None]
            window = torch.cat([window, fed_ids], dim=1)[:, -cfg.repetition_window :]
            if seen is not None:
                seen[live, fed_ids[live, 0]] = True
            start = mask.shape[1]
            mask = torch.cat([mask, live[:, None]], dim=1)
            logits, past = self.forward(fed_ids, mask, start, past)
        return [Generation(out[r], finished[r], lengths[r]) for r in range(batch)]


def generate(
    model: Any, prompts: list[list[int]], seeds: list[int], cfg: SamplingConfig
) -> list[Generation]:
    """Generate for several prompts at once; the result order follows `prompts`."""
    if not prompts:
        return []
    if len(seeds) != len(prompts):
        raise ValueError("one seed per prompt")
    runner = _Runner(model, cfg)
    if runner.kind == "unpadded" and len(prompts) > 1:
        return [runner.run([p], [s])[0] for p, s in zip(prompts, seeds, strict=True)]
    return runner.run([list(p) for p in prompts], list(seeds))


def dtype_kwarg() -> str:
    """`dtype` in transformers >= 4.56, `torch_dtype` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


class TransformersLLM:
    """The Step-Audio-EditX LLM through transformers, loaded once from the local folder."""

    backend = "transformers"

    def __init__(self, model_dir: str | Path, device: str) -> None:
        self.model_dir = str(model_dir)
        self.device = device
        self.model: Any = None
        self.tokenizer: Any = None

    def load(self) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        # The model's ids are transformers 4.53.3's, whatever transformers is installed.
        self.tokenizer = load_text_tokenizer(self.model_dir)
        config = AutoConfig.from_pretrained(
            self.model_dir, trust_remote_code=True, local_files_only=True
        )
        # transformers >= 4.54 ties an untied lm_head when the config does not say otherwise
        # (the folder's does not) and the model then emits silence: keep the checkpoint's own
        # lm_head. Set on the config, as transformers 5 no longer takes it as a loading kwarg.
        config.tie_word_embeddings = False
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_dir,
            config=config,
            trust_remote_code=True,
            local_files_only=True,
            **{dtype_kwarg(): dtype},
        )
        self.model.to(self.device).eval()
        attention_kind(self.model)

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def generate(
        self, prompts: list[list[int]], seeds: list[int], cfg: SamplingConfig
    ) -> list[Generation]:
        return generate(self.model, prompts, seeds, cfg)
