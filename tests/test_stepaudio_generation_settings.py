"""Sampling settings read from the model folder the way the release's `generate()` call sees them,
checked against the processors transformers itself builds from the same folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from stepedit_core.engines import EngineNotReady, EngineOptions, make_engine
from stepedit_core.engines.stepaudio import layout
from stepedit_core.engines.stepaudio.generation_settings import (
    RELEASE_CALL,
    GenerationSettingsError,
    sampling_config,
)
from stepedit_core.engines.stepaudio.llm import (
    RepetitionAwareLogitsProcessor,
    TransformersLLM,
    generate,
)

from stepaudio_standins import make_standin_models, shared_standins


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _folder(tmp_path: Path, generation: dict | None = None, **config: object) -> Path:
    """A copy of the stand-in LLM folder's config (no weights) with the given settings."""
    source = layout.llm_dir(shared_standins("free")[0])
    folder = tmp_path / "llm"
    folder.mkdir()
    data = json.loads((source / "config.json").read_text())
    data.update(config)
    (folder / "config.json").write_text(json.dumps(data))
    if generation is not None:
        (folder / "generation_config.json").write_text(json.dumps(generation))
    return folder


def test_without_a_generation_config_the_release_call_gives_top_k_50(tmp_path):
    cfg = sampling_config(_folder(tmp_path))
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p) == (0.7, 50, 1.0, None)
    assert cfg.repetition_penalty == 1.0 and cfg.eos_ids == (3,) and not cfg.greedy
    assert cfg.max_length == 8192 and cfg.max_new_tokens is None


def test_the_file_decides_what_the_call_leaves_open_and_the_call_wins_the_rest(tmp_path):
    generation = {
        "top_k": 20,
        "top_p": 0.8,
        "min_p": 0.05,
        "repetition_penalty": 1.2,
        "eos_token_id": [3, 2],
        "min_length": 40,
        "temperature": 1.3,  # the release passes temperature=0.7 itself
        "do_sample": False,  # and do_sample=True
        "max_length": 100,  # and max_length=8192
        "bos_token_id": 1,
        "transformers_version": "4.53.3",
    }
    cfg = sampling_config(_folder(tmp_path, generation))
    assert (cfg.top_k, cfg.top_p, cfg.min_p, cfg.repetition_penalty) == (20, 0.8, 0.05, 1.2)
    assert cfg.eos_ids == (3, 2) and cfg.min_length == 40
    assert cfg.temperature == 0.7 and not cfg.greedy and cfg.max_length == 8192


def test_top_k_zero_in_the_file_turns_top_k_off_and_engine_options_override(tmp_path):
    folder = _folder(tmp_path, {"top_k": 0})
    assert sampling_config(folder).top_k is None
    options = {"stepaudio_top_k": 5, "stepaudio_temperature": 1.0, "stepaudio_greedy": True}
    cfg = sampling_config(folder, options)
    assert (cfg.top_k, cfg.temperature, cfg.greedy) == (5, 1.0, True)


def test_without_the_file_generation_keys_of_config_json_count(tmp_path):
    cfg = sampling_config(_folder(tmp_path, None, top_k=10, eos_token_id=7))
    assert cfg.top_k == 10 and cfg.eos_ids == (7,)


def test_a_file_written_from_the_model_config_yields_to_its_generation_keys(tmp_path):
    generation = {"_from_model_config": True, "eos_token_id": 3, "top_k": 50}
    assert sampling_config(_folder(tmp_path, generation, top_k=12)).top_k == 12
    other = tmp_path / "other"
    other.mkdir()
    plain = {"eos_token_id": 3, "top_k": 30}
    assert sampling_config(_folder(other, plain, top_k=12)).top_k == 30


@pytest.mark.parametrize(
    ("generation", "needle"),
    [
        ({"num_beams": 4}, "num_beams=4"),
        ({"typical_p": 0.5, "no_repeat_ngram_size": 3}, "no_repeat_ngram_size=3, typical_p=0.5"),
        ({"suppress_tokens": [5]}, "suppress_tokens=[5]"),
    ],
)
def test_settings_the_engine_can_not_reproduce_refuse_the_folder(tmp_path, generation, needle):
    with pytest.raises(GenerationSettingsError, match="generation_config.json sets") as info:
        sampling_config(_folder(tmp_path, generation))
    assert needle in str(info.value)


def test_the_engine_refuses_such_a_folder_before_running(tmp_path):
    models, src = make_standin_models(tmp_path)
    (layout.llm_dir(models) / "generation_config.json").write_text(json.dumps({"num_beams": 2}))
    engine = make_engine(
        "step-audio-editx", EngineOptions(models_dir=str(models), stepaudio_src=str(src))
    )
    with pytest.raises(EngineNotReady, match="num_beams=2"):
        engine.check_ready()


def _transformers_reference(model, folder: Path, prompt: list[int], seed: int, steps: int):
    """The release's call, step by step without a cache: the logits processors transformers
    builds from the folder's generation config plus the release's processor, then one
    `torch.multinomial` draw from the global generator seeded with `seed`."""
    from transformers import GenerationConfig, LogitsProcessorList

    config = GenerationConfig.from_pretrained(folder)
    config.update(**RELEASE_CALL)
    processors = model._get_logits_processor(
        generation_config=config,
        input_ids_seq_length=len(prompt),
        encoder_input_ids=torch.tensor([prompt]),
        prefix_allowed_tokens_fn=None,
        logits_processor=LogitsProcessorList([RepetitionAwareLogitsProcessor()]),
        device="cpu",
    )
    names = [type(p).__name__ for p in processors]
    torch.manual_seed(seed)
    sequence = list(prompt)
    for _ in range(steps):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([sequence])).logits[:, -1].float()
        scores = processors(torch.tensor([sequence]), logits)
        token = int(torch.multinomial(torch.softmax(scores, dim=-1), 1)[0, 0])
        if token in config.eos_token_id:
            break
        sequence.append(token)
    return sequence[len(prompt) :], names


def test_sampled_ids_equal_transformers_processors_built_from_the_folder(tmp_path):
    source = layout.llm_dir(shared_standins("free")[0])
    folder = tmp_path / "llm"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("CosyVoice-*"))
    generation = {"top_k": 20, "top_p": 0.9, "repetition_penalty": 1.3, "eos_token_id": [3, 2]}
    (folder / "generation_config.json").write_text(json.dumps(generation))
    llm = TransformersLLM(folder, "cpu")
    llm.load()
    cfg = dataclasses.replace(sampling_config(folder), max_new_tokens=25)
    prompts = [
        [1, 4] + llm.encode(f"human\n{text}<audio_5><audio_7><audio_1030>") + [3, 4]
        for text in ("make it happy", "a longer instruction for this clip", "whisper")
    ]
    together = generate(llm.model, prompts, [1, 2, 3], cfg)
    for seed, (prompt, joint) in enumerate(zip(prompts, together, strict=True), start=1):
        reference, names = _transformers_reference(llm.model, folder, prompt, seed, 25)
        assert names == [
            "RepetitionPenaltyLogitsProcessor",
            "RepetitionAwareLogitsProcessor",
            "TemperatureLogitsWarper",
            "TopKLogitsWarper",
            "TopPLogitsWarper",
        ]
        assert joint.ids == reference


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filters_equal_transformers_processors(seed):
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TopPLogitsWarper,
    )

    from stepedit_core.engines.stepaudio.llm import min_p_filter, penalise_seen, top_p_filter

    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(4, 64, generator=gen) * 3
    for top_p in (0.3, 0.9, 0.99):
        expected = TopPLogitsWarper(top_p)(None, scores.clone())
        assert torch.equal(top_p_filter(scores.clone(), top_p), expected)
    for min_p in (0.05, 0.3):
        assert torch.equal(
            min_p_filter(scores.clone(), min_p), MinPLogitsWarper(min_p)(None, scores.clone())
        )
    ids = torch.randint(0, 64, (4, 12), generator=gen)
    seen = torch.zeros(4, 64, dtype=torch.bool).scatter_(1, ids, True)
    expected = RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())
    assert torch.equal(penalise_seen(scores.clone(), seen, 1.3), expected)
