"""The Step-Audio-EditX engine on stand-in models: stages, rounds, prompt modes, failures."""

from __future__ import annotations

import functools
import pickle
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch
from pydantic import ValidationError
from work_items import row_item, run_stages

from stepedit_core.engines import EngineNotReady, EngineOptions, make_engine
from stepedit_core.engines.stepaudio import layout, tokens, upstream
from stepedit_core.engines.stepaudio.engine import StepAudioEngine, expected_new_codes
from stepedit_core.foundation.edits import EditSpec, parse_chain
from stepedit_core.foundation.failures import ItemFailure
from stepedit_core.lifecycle.rounds import build_stages

from stepaudio_standins import shared_standins, tone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add contention
    yield
    torch.set_num_threads(threads)


def _options(behavior: str = "audio", **kwargs) -> EngineOptions:
    models, src = shared_standins(behavior)
    kwargs = {"stepaudio_greedy": True, **kwargs}
    return EngineOptions(models_dir=str(models), stepaudio_src=str(src), **kwargs)


@pytest.fixture(scope="module")
def engine() -> StepAudioEngine:
    """One engine for the module: stages keep their models across runs (setup is idempotent)."""
    return make_engine("step-audio-editx", _options())


def _clip(path, seconds=1.0, rate=24000, freq=220.0, channels=1) -> str:
    sf.write(path, tone(seconds, rate, freq, channels), rate)
    return str(path)


def _run(engine, items, iterations=3, with_round0=False, prompt_mode="chain"):
    stages = build_stages(
        engine, rounds=iterations, with_clone_round=with_round0, prompt_mode=prompt_mode
    )
    return run_stages(stages, items)


def test_identity_capabilities_and_supports():
    engine = make_engine("step-audio-editx")
    assert engine.name == "step-audio-editx"
    assert set(engine.capabilities()) == {
        "emotion",
        "style",
        "speed",
        "paralinguistic",
        "denoise",
        "vad",
        "clone",
    }
    ok = [
        "emotion=happy",
        "emotion=remove",
        "style=act_coy",
        "style=remove",
        "speed=faster",
        "speed=more slower",
        "paralinguistic",
        "denoise",
        "vad",
        "clone",
    ]
    bad = ["speed=1.25", "vad=0.3", "loudness=ebu", "loudness=-23"]
    assert all(engine.supports(parse_chain(e)[0]) for e in ok)
    assert not any(engine.supports(parse_chain(e)[0]) for e in bad)
    with pytest.raises(ItemFailure) as info:
        engine.check_row(parse_chain("speed=1.25"), "hi", None)
    assert info.value.code == "unsupported_edit" and "step-audio-editx" in str(info.value)


def test_stages_resources_batches_and_overrides():
    engine = make_engine("step-audio-editx")
    described = engine.describe()["stages"]
    assert [s["name"] for s in described] == ["tokenize", "edit", "decode"]
    assert [s["gpus"] for s in described] == [0.2, 0.5, 0.3]
    assert sum(s["gpus"] for s in described) == pytest.approx(1.0)
    custom = make_engine(
        "step-audio-editx",
        EngineOptions(gpus={"edit": 1.0, "decode": 0.0}, batch_sizes={"edit": 64, "decode": 2}),
    )
    by_name = {s.name: s for s in custom.stages()}
    assert by_name["edit"].resources.gpus == 1.0 and by_name["edit"].batch_size == 64
    assert by_name["decode"].resources.gpus == 0.0 and by_name["decode"].batch_size == 2
    assert by_name["decode"].device() == "cpu"


def test_check_ready_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    with pytest.raises(EngineNotReady, match="needs --models DIR"):
        make_engine("step-audio-editx").check_ready()
    with pytest.raises(EngineNotReady, match="does not exist"):
        make_engine("step-audio-editx", EngineOptions(models_dir=str(tmp_path / "x"))).check_ready()
    (tmp_path / "Step-Audio-EditX").mkdir()
    with pytest.raises(EngineNotReady) as info:
        make_engine("step-audio-editx", EngineOptions(models_dir=str(tmp_path))).check_ready()
    assert "Step-Audio-Tokenizer/linguistic_tokenizer.npy" in str(info.value)
    models, src = shared_standins()
    no_src = make_engine("step-audio-editx", EngineOptions(models_dir=str(models)))
    with pytest.raises(upstream.UpstreamMissing) as info:
        no_src.check_ready()
    assert "--stepaudio-src" in str(info.value) and upstream.ENV_VAR in str(info.value)
    with pytest.raises(upstream.UpstreamMissing, match="not a Step-Audio-EditX checkout"):
        make_engine(
            "step-audio-editx", EngineOptions(models_dir=str(models), stepaudio_src=str(tmp_path))
        ).check_ready()
    monkeypatch.setenv(upstream.ENV_VAR, str(src))
    no_src.check_ready()  # the environment variable names the checkout
    # the engine's settings are typed: an unknown backend never reaches the engine
    with pytest.raises(ValidationError, match="llm_backend"):
        _options(llm_backend="tensorrt")


def test_stages_pickle_before_and_after_setup(engine):
    for stage in make_engine("step-audio-editx", _options()).stages():
        clone = pickle.loads(pickle.dumps(stage))
        assert clone.name == stage.name and clone._parts is None
    stage = engine.stages()[1]
    stage.setup()
    clone = pickle.loads(pickle.dumps(stage))  # models stay behind
    assert clone._parts is None and stage._parts is not None


def test_setup_is_idempotent_and_loads_once(engine):
    stages = engine.stages()
    for stage in stages:
        stage.setup()
    parts = [stage.parts for stage in stages]
    tokenizer_cls = type(parts[0].tokenizer.upstream)
    before = tokenizer_cls.instances
    for stage in stages:
        stage.setup()
    assert [stage.parts for stage in stages] == parts
    assert tokenizer_cls.instances == before


def test_three_rounds_through_the_local_executor(engine, tmp_path):
    items = [
        row_item(
            0,
            "happy",
            _clip(tmp_path / "a.wav", 1.2),
            parse_chain("emotion=happy"),
            text="hello world",
            seed=7,
        ),
        row_item(
            1,
            "para-8k-stereo",
            _clip(tmp_path / "b.wav", 1.0, 8000, 300.0, 2),
            parse_chain("paralinguistic"),
            text="good morning",
            target_text="[Laughter] good morning",
            seed=8,
        ),
        row_item(
            2,
            "denoise",
            _clip(tmp_path / "c.flac", 0.8, 44100, 150.0),
            parse_chain("denoise"),
            seed=9,
        ),
    ]
    decoder_calls = engine.stages()[2]
    out = _run(engine, items)
    assert decoder_calls.parts.decoder.cosyvoice.calls >= 9
    for item in out:
        assert item.error_code is None, item.error
        assert [r.round for r in item.records] == [1, 2, 3]
        for record in item.records:
            assert record.status == "ok" and record.audio_flac
            assert record.sample_rate == 24000 and record.channels == 1
            for codes in (
                record.engine_columns["input_tokens"],
                record.engine_columns["output_tokens"],
            ):
                assert codes and all(isinstance(c, int) for c in codes)
                tokens.validate_codes(codes)
            assert json_has(record.timings_json, "tokenize", "edit", "decode")
            # the audit trail: the exact instruction sent, and which model folder ran it
            assert record.engine_columns["instruction"] and record.engine_columns[
                "instruction"
            ].endswith("\n")
            assert record.engine_columns["model_fingerprint"] == layout.fingerprint(
                engine.options.models_dir
            )
        assert item.records[1].input_sha256 == item.records[0].output_sha256
    para = out[1]
    assert para.text == "[Laughter] good morning"
    assert [r.text for r in para.records] == ["[Laughter] good morning"] * 3
    assert out[0].text == "hello world"


def json_has(text: str, *keys: str) -> bool:
    import json

    data = json.loads(text)
    return all(k in data for k in keys)


def test_reruns_reproduce_with_sampling(tmp_path):
    engine = make_engine("step-audio-editx", _options(stepaudio_greedy=False))
    path = _clip(tmp_path / "a.wav", 1.0)

    def once(seed):
        item = row_item(0, "a", path, parse_chain("style=whisper"), text="hi there", seed=seed)
        return _run(engine, [item], iterations=2)[0].records

    first, again, other = once(5), once(5), once(6)
    assert [r.engine_columns["output_tokens"] for r in first] == [
        r.engine_columns["output_tokens"] for r in again
    ]
    assert [r.output_sha256 for r in first] == [r.output_sha256 for r in again]
    assert first[0].engine_columns["output_tokens"] != other[0].engine_columns["output_tokens"]


def test_chain_and_fixed_prompt_modes(engine, tmp_path):
    path = _clip(tmp_path / "a.wav", 1.2, freq=200.0)

    def run(mode):
        item = row_item(0, "a", path, parse_chain("emotion=sad"), text="so it goes", seed=3)
        return _run(engine, [item], prompt_mode=mode)[0]

    chain, fixed = run("chain"), run("fixed")
    # Round 1: both use the original clip as the voice prompt.
    assert chain.records[0].output_sha256 == fixed.records[0].output_sha256
    # Round 2 edits the same input, but with a different voice prompt.
    assert chain.records[1].input_sha256 == fixed.records[1].input_sha256
    assert chain.records[1].output_sha256 != fixed.records[1].output_sha256


def test_fixed_mode_takes_decoder_prompt_features_from_the_original(engine, tmp_path):
    stage = engine.stages()[0]
    stage.setup()
    original = tone(1.0, 24000, 300.0)
    from stepedit_core.foundation.audio import Audio

    denoise = (EditSpec("denoise"),)
    item = row_item(0, "a", "", denoise, round=2, round_edits=denoise)
    item.audio = Audio(tone(1.0, 24000, 150.0), 24000)
    item.prompt = Audio(original, 24000)
    stage.process_batch([item])
    assert item.error is None
    expected = stage.parts.tokenizer.encode(item.prompt, with_features=True)
    assert item.trace.voice.codes == expected.codes
    assert item.trace.input_tokens != expected.codes
    np.testing.assert_allclose(item.trace.voice.embedding, expected.embedding)


def test_clone_row_makes_round_zero(engine, tmp_path):
    items = [
        row_item(
            0,
            "clone",
            _clip(tmp_path / "p.wav", 1.5, 22050, 180.0),
            parse_chain("clone;style=whisper"),
            text="the quick brown fox",
            target_text="jumps over the lazy dog",
            seed=1,
        ),
        row_item(
            1,
            "clone-only",
            _clip(tmp_path / "q.wav", 1.0),
            parse_chain("clone"),
            text="one two",
            target_text="three four five six",
            seed=2,
        ),
    ]
    out = _run(engine, items, iterations=2, with_round0=True)
    cloned, only = out
    assert [r.round for r in cloned.records] == [0, 1, 2]
    assert [r.edit for r in cloned.records] == ["clone", "style=whisper", "style=whisper"]
    assert all(r.ok for r in cloned.records)
    assert cloned.text == "jumps over the lazy dog"
    assert cloned.records[0].text == "jumps over the lazy dog"
    assert [r.round for r in only.records] == [0] and only.records[0].status == "ok"
    # Round 0's input tokens are the prompt clip's; the clone speaks the longer target text.
    assert len(only.records[0].engine_columns["output_tokens"]) > 0


def test_too_long_fails_before_generation(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(engine.options, "segment_seconds", 200.0)  # the clip goes whole
    path = _clip(tmp_path / "long.wav", 100.0, 16000)
    item = row_item(0, "long", path, parse_chain("emotion=happy"), text="a long read", seed=1)
    out = _run(engine, [item], iterations=1)[0]
    assert out.error_code == "too_long"
    assert "8192" in out.error and "100.0 s of audio" in out.error and "up to about" in out.error
    assert (
        out.records[0].status == "failed" and out.records[0].engine_columns["output_tokens"] is None
    )


def test_expected_lengths_for_the_guard():
    assert expected_new_codes(EditSpec("emotion", "happy"), 100, "a", None) == 100
    assert expected_new_codes(EditSpec("speed", "more slower"), 100, "a", None) == 150
    assert expected_new_codes(EditSpec("speed", "faster"), 100, "a", None) == 80
    para = expected_new_codes(EditSpec("paralinguistic"), 100, "a", "[Sigh] a [Laughter]")
    assert para == 150
    assert expected_new_codes(EditSpec("clone"), 100, "abcd", "abcdabcd") == 200


@pytest.mark.parametrize(
    ("behavior", "needle"),
    [
        ("text", "not audio tokens"),
        ("odd", "slot 0) is"),
        ("silent", "generated no audio tokens"),
    ],
)
def test_bad_generations_fail_without_audio(behavior, needle, tmp_path):
    engine = make_engine("step-audio-editx", _options(behavior))
    good = row_item(
        0, "a", _clip(tmp_path / "a.wav"), parse_chain("emotion=happy"), text="hello world", seed=1
    )
    out = _run(engine, [good], iterations=2)[0]
    assert out.error_code == "bad_generation" and needle in out.error
    assert len(out.records) == 1  # later rounds do not run for a failed item
    record = out.records[0]
    assert record.status == "failed" and record.audio_flac is None
    assert record.engine_columns["output_tokens"] is None and record.engine_columns["input_tokens"]


def test_one_bad_item_does_not_sink_the_batch(engine, tmp_path):
    edit = engine.stages()[1]
    edit.setup()
    llm = edit.parts.llm
    real = llm.generate
    poison = []

    def flaky(prompt_ids, seeds, cfg):
        if any(p == poison[0] for p in prompt_ids):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(prompt_ids, seeds, cfg)

    items = [
        row_item(
            i,
            f"c{i}",
            _clip(tmp_path / f"{i}.wav", 0.6 + 0.2 * i, freq=150.0 + 40 * i),
            parse_chain("emotion=angry"),
            text=f"clip {i}",
            seed=i,
        )
        for i in range(3)
    ]
    tokenize = engine.stages()[0]
    tokenize.setup()
    for item in items:
        from stepedit_core.foundation import audio as audio_io

        item.audio, _ = audio_io.load(item.audio_uri)
        item.prompt = item.audio
        item.round_edits = item.edits
    tokenize.process_batch(items)
    poison.append(edit._build(items[1], _plan_for(items[1]), 0)[0])
    llm.generate = flaky
    try:
        edit.process_batch(items)
    finally:
        llm.generate = real
    assert items[1].error_code == "generation_error" and "simulated" in items[1].error
    assert items[0].error_code is None and items[2].error_code is None
    assert items[0].trace.output_tokens and items[2].trace.output_tokens


def _plan_for(item):
    from stepedit_core.engines.stepaudio.engine import _Passes

    return _Passes(item.edits, list(item.trace.input_tokens), item.text, item.round_seed)


def test_a_chain_of_edits_runs_one_pass_each(engine, tmp_path):
    item = row_item(
        0,
        "a",
        _clip(tmp_path / "a.wav", 1.0),
        parse_chain("emotion=happy;vad"),
        text="hello world",
        seed=4,
    )
    single = row_item(
        0, "a", item.audio_uri, parse_chain("emotion=happy"), text="hello world", seed=4
    )
    chained, alone = _run(engine, [item], iterations=1)[0], _run(engine, [single], iterations=1)[0]
    assert chained.records[0].edit == "emotion=happy;vad"
    assert chained.records[0].status == "ok"
    assert (
        chained.records[0].engine_columns["input_tokens"]
        == alone.records[0].engine_columns["input_tokens"]
    )
    assert (
        chained.records[0].engine_columns["output_tokens"]
        != alone.records[0].engine_columns["output_tokens"]
    )


def test_too_short_audio_fails_that_item(engine, tmp_path):
    item = row_item(0, "tiny", _clip(tmp_path / "t.wav", 0.05), parse_chain("denoise"), seed=1)
    out = _run(engine, [item], iterations=1)[0]
    assert out.error_code == "too_short"


def test_injected_factories_need_no_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    models, src = shared_standins()
    made = {
        "audio_tokenizer": functools.partial(upstream.load_audio_tokenizer, str(src)),
        "frontend": functools.partial(upstream.load_frontend, str(src)),
        "decoder": functools.partial(upstream.load_decoder, str(src)),
    }
    options = EngineOptions(models_dir=str(models), stepaudio_factories=made, stepaudio_greedy=True)
    engine = make_engine("step-audio-editx", options)
    engine.check_ready()
    pickle.dumps(engine.stages())
    item = row_item(0, "a", _clip(tmp_path / "a.wav"), parse_chain("vad"), seed=1)
    out = _run(engine, [item], iterations=1)[0]
    assert out.error_code is None and out.records[0].status == "ok"


def test_setup_without_a_checkout_raises_engine_not_ready(monkeypatch):
    monkeypatch.delenv(upstream.ENV_VAR, raising=False)
    models, _ = shared_standins()
    stage = make_engine("step-audio-editx", EngineOptions(models_dir=str(models))).stages()[0]
    with pytest.raises(upstream.UpstreamMissing, match="--stepaudio-src"):
        stage.setup()


def test_upstream_import_sets_aside_modules_of_the_same_name():
    _, src = shared_standins()
    foreign = types.ModuleType("tokenizer")
    foreign.__file__ = "/somewhere/else/tokenizer.py"
    saved = sys.modules.get("tokenizer")
    sys.modules["tokenizer"] = foreign
    try:
        module = upstream.import_module(str(src), "tokenizer")
        assert hasattr(module, "StepAudioTokenizer")
        assert sys.modules["tokenizer"] is foreign  # put back for its owner
    finally:
        if saved is None:
            sys.modules.pop("tokenizer", None)
        else:
            sys.modules["tokenizer"] = saved


def test_mel_conf_is_read_without_building_models():
    models, _ = shared_standins()
    conf = upstream.read_mel_conf(models / "Step-Audio-EditX/CosyVoice-300M-25Hz/cosyvoice.yaml")
    assert conf == {
        "n_fft": 1920,
        "num_mels": 80,
        "sampling_rate": 24000,
        "hop_size": 480,
        "win_size": 1920,
        "fmin": 0,
        "fmax": 8000,
        "center": False,
    }
