"""The LLM: loading from the stand-in folder, batched generation, seeds, the repetition rule."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from stepedit_core.engines.stepaudio import layout, prompts, tokens
from stepedit_core.engines.stepaudio.llm import (
    RepetitionAwareLogitsProcessor,
    SamplingConfig,
    TransformersLLM,
    alibi_bias,
    alibi_slopes,
    block_repetition,
    generate,
    grouped_attention,
)
from stepedit_core.foundation.edits import EditSpec

from stepaudio_standins import shared_standins

GREEDY = SamplingConfig(greedy=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    yield
    torch.set_num_threads(threads)


def _load(behavior: str = "audio") -> TransformersLLM:
    models, _ = shared_standins(behavior)
    llm = TransformersLLM(layout.llm_dir(models), "cpu")
    llm.load()
    return llm


@pytest.fixture(scope="module")
def llm() -> TransformersLLM:
    return _load()


def _codes(groups: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    out: list[int] = []
    for _ in range(groups):
        out += [rng.randrange(1024), rng.randrange(1024)]
        out += [1024 + rng.randrange(4096) for _ in range(3)]
    return out


def _prompts(llm: TransformersLLM) -> list[list[int]]:
    cases = [
        (EditSpec("emotion", "happy"), "hello world", 6),
        (EditSpec("denoise"), None, 11),
        (EditSpec("style", "whisper"), "good morning to you all", 3),
    ]
    return [
        prompts.edit_prompt_ids(
            llm.encode, prompts.instruction_text(spec, text), tokens.to_text(_codes(n, i))
        )
        for i, (spec, text, n) in enumerate(cases)
    ]


def test_repetition_rule_blocks_a_last_id_seen_twice_in_the_window():
    scores = torch.zeros(3, 10)
    window = torch.tensor(
        [
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 5],  # last id 5 appears twice: blocked
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 0],  # 0 appears once: untouched
            [7, 7, 7, 7, 7, 7, 7, 7, 7, 7],  # blocked
        ]
    )
    out = block_repetition(window, scores.clone())
    assert out[0, 5] == float("-inf") and torch.isfinite(out[0, torch.arange(10) != 5]).all()
    assert torch.isfinite(out[1]).all()
    assert out[2, 7] == float("-inf") and torch.isfinite(out[2]).sum() == 9


def test_repetition_rule_uses_only_the_last_ten_ids_and_skips_short_windows():
    scores = torch.zeros(1, 10)
    # 5 occurs at position 0, outside the last 10 ids: not a repeat.
    out = block_repetition(torch.tensor([[5, 1, 2, 3, 4, 6, 7, 8, 9, 0, 5]]), scores.clone())
    assert torch.isfinite(out).all()
    out = block_repetition(torch.tensor([[5, 5, 5]]), scores.clone())
    assert torch.isfinite(out).all()
    processor = RepetitionAwareLogitsProcessor()
    window = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 9]])
    assert processor(window, scores.clone())[0, 9] == float("-inf")


def test_alibi_slopes_and_padding_bias():
    slopes = alibi_slopes(48)
    assert slopes.shape == (48,)
    assert slopes[0].item() == pytest.approx(2 ** (-8 / 32))
    assert slopes[32].item() == pytest.approx(2 ** (-4 / 32))
    key_mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    bias = alibi_bias(key_mask, 0, 4, 4, alibi_slopes(2), torch.float32, "cpu")
    assert bias.shape == (2, 2, 4, 4)
    assert not torch.isnan(torch.softmax(bias, -1)).any()  # pad queries see themselves
    assert (bias[0, :, 3, :2] == float("-inf")).all()  # padding keys are masked
    assert bias[1, 0, 3, 2].item() == pytest.approx(-1.0 * slopes_of(2)[0])
    assert bias[1, 0, 3, 0].item() == pytest.approx(-(3**0.5) * slopes_of(2)[0])


def slopes_of(n: int) -> list[float]:
    return alibi_slopes(n).tolist()


def test_loading_keeps_the_untied_lm_head_and_patches_attention(llm):
    from safetensors.torch import load_file

    folder = layout.llm_dir(shared_standins()[0])
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    saved = load_file(str(folder / index["weight_map"]["lm_head.weight"]))["lm_head.weight"]
    model = llm.model
    assert model.config.tie_word_embeddings is False
    assert torch.equal(model.lm_head.weight, saved)
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    assert model._stepedit_attention == "alibi"


def test_batched_generation_equals_one_at_a_time_under_greedy(llm):
    batch = _prompts(llm)
    assert len({len(p) for p in batch}) == 3  # different lengths: the batch is padded
    together = generate(llm.model, batch, [1, 2, 3], GREEDY)
    for prompt, joint in zip(batch, together, strict=True):
        alone = generate(llm.model, [prompt], [9], GREEDY)[0]
        assert joint.finished and alone.finished
        assert joint.ids == alone.ids
        assert tokens.ids_to_codes(joint.ids)  # well-formed audio codes


def test_without_the_padding_patch_padded_rows_change(llm):
    """The shipped Step1 attention ignores the mask: batched prompts would see the padding."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = layout.llm_dir(shared_standins()[0])
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    config.tie_word_embeddings = False
    raw = AutoModelForCausalLM.from_pretrained(
        folder, config=config, trust_remote_code=True, local_files_only=True
    ).eval()
    short, long = _prompts(llm)[2], _prompts(llm)[1]
    padded = torch.tensor([[0] * (len(long) - len(short)) + short])
    with torch.no_grad():
        unpatched = raw(input_ids=padded).logits[0, -1]
        reference = raw(input_ids=torch.tensor([short])).logits[0, -1]
    assert not torch.allclose(unpatched, reference, atol=1e-4)


def test_seeds_reproduce_and_do_not_depend_on_batch_company(llm):
    batch = _prompts(llm)
    sampled = SamplingConfig()
    first = generate(llm.model, batch, [11, 22, 33], sampled)
    again = generate(llm.model, batch, [11, 22, 33], sampled)
    reordered = generate(llm.model, batch[::-1], [33, 22, 11], sampled)[::-1]
    alone = generate(llm.model, [batch[1]], [22], sampled)[0]
    assert [g.ids for g in first] == [g.ids for g in again] == [g.ids for g in reordered]
    assert first[1].ids == alone.ids
    other_seed = generate(llm.model, [batch[1]], [23], sampled)[0]
    assert other_seed.ids != alone.ids
    assert generate(llm.model, [batch[1]], [0], GREEDY)[0].ids != alone.ids  # it does sample


def test_length_cap_without_eos_is_reported_unfinished():
    llm = _load("endless")
    prompt = _prompts(llm)[0]
    cap = SamplingConfig(greedy=True, max_length=len(prompt) + 12)
    result = generate(llm.model, [prompt], [0], cap)[0]
    assert not result.finished and len(result.ids) == 12 and result.prompt_len == len(prompt)


def test_forced_length_suppresses_eos():
    llm = _load("free")
    batch = _prompts(llm)[:2]
    forced = SamplingConfig(min_new_tokens=15, max_new_tokens=15)
    results = generate(llm.model, batch, [1, 2], forced)
    assert [len(r.ids) for r in results] == [15, 15]
    assert all(3 not in r.ids for r in results)


def test_cached_padded_batch_matches_a_full_recompute_with_the_shipped_attention():
    """Reference: the unpatched model (attention as shipped), no KV cache, one clip at a time,
    the whole sequence recomputed every step, then the repetition rule and argmax."""
    from transformers import AutoConfig, AutoModelForCausalLM

    llm = _load("free")
    folder = layout.llm_dir(shared_standins("free")[0])
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    config.tie_word_embeddings = False
    raw = AutoModelForCausalLM.from_pretrained(
        folder, config=config, trust_remote_code=True, local_files_only=True
    ).eval()
    batch = _prompts(llm)
    steps = 12
    ours = generate(llm.model, batch, [0, 0, 0], SamplingConfig(greedy=True, max_new_tokens=steps))
    for prompt, result in zip(batch, ours, strict=True):
        sequence = list(prompt)
        for _ in range(steps):
            with torch.no_grad():
                logits = raw(input_ids=torch.tensor([sequence])).logits[:, -1].float()
            logits = block_repetition(torch.tensor([sequence]), logits)
            token = int(logits.argmax(-1))
            if token == 3:
                break
            sequence.append(token)
        assert result.ids == sequence[len(prompt) :]


@pytest.mark.parametrize("bias_batch", [1, 2])
def test_grouped_attention_equals_attention_over_repeated_keys(bias_batch):
    gen = torch.Generator().manual_seed(0)
    b, heads, groups, s, t, d = 2, 6, 2, 3, 7, 8
    q = torch.randn(b, heads, s, d, generator=gen)
    k = torch.randn(b, groups, t, d, generator=gen)
    v = torch.randn(b, groups, t, d, generator=gen)
    key_mask = torch.tensor([[False, True, True, True, True, True, True], [True] * 7])
    bias = alibi_bias(key_mask[:bias_batch], t - s, s, t, alibi_slopes(heads), q.dtype, "cpu")
    ours = grouped_attention(q, k, v, bias)
    reference = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1), attn_mask=bias
    )
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-6)


class _BatchSizes:
    """Records the batch size of every decode step (one new id per row) of a model."""

    def __init__(self, model):
        self.sizes: list[int] = []
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids.shape[1] == 1:
            self.sizes.append(int(ids.shape[0]))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_finished_rows_leave_the_batch(llm):
    batch = _prompts(llm)  # 6, 11 and 3 groups of audio: the stand-in answers as many codes
    with _BatchSizes(llm.model) as seen:
        results = generate(llm.model, batch, [1, 2, 3], GREEDY)
    lengths = [len(r.ids) for r in results]
    assert lengths == [30, 55, 15] and all(r.finished for r in results)
    # Row i is fed after each of its ids (its EOS ends it): step j runs the rows with >= j ids.
    expected = [sum(n >= j for n in lengths) for j in range(1, max(lengths) + 1)]
    assert seen.sizes == expected
    assert seen.sizes[0] == 3 and seen.sizes[-1] == 1
    with _BatchSizes(llm.model) as kept:
        same = generate(
            llm.model, batch, [1, 2, 3], dataclasses.replace(GREEDY, drop_finished=False)
        )
    assert kept.sizes == [3] * max(lengths)
    assert [r.ids for r in same] == [r.ids for r in results]


@pytest.mark.parametrize("greedy", [True, False])
def test_dropping_finished_rows_does_not_change_any_ids(greedy):
    llm = _load("free")  # random weights, no rules
    batch = _prompts(llm) * 2
    seeds = [5, 6, 7, 8, 9, 10]
    # The cap counts the prompt too: shorter prompts get more new ids, so rows end apart.
    cap = max(map(len, batch)) + 8
    cfg = SamplingConfig(greedy=greedy, max_length=cap, repetition_penalty=1.1, top_p=0.95)
    with _BatchSizes(llm.model) as seen:
        dropped = generate(llm.model, batch, seeds, cfg)
    kept = generate(llm.model, batch, seeds, dataclasses.replace(cfg, drop_finished=False))
    assert [r.ids for r in dropped] == [r.ids for r in kept]
    assert [r.finished for r in dropped] == [r.finished for r in kept]
    assert seen.sizes[0] == 6 and seen.sizes[-1] < 6  # rows did leave
    if not greedy:
        alone = [
            generate(llm.model, [p], [s], cfg)[0].ids for p, s in zip(batch, seeds, strict=True)
        ]
        assert alone == [r.ids for r in dropped]
