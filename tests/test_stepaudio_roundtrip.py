"""Chained model edits in one round: the release's trip through 16-bit audio between two passes,
checked against an independent computation with the stand-in decoder and tokenizer."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import soundfile as sf
import torch
from work_items import row_item, run_stages

from stepedit_core.engines import EngineOptions, make_engine
from stepedit_core.engines.stepaudio import layout, roundtrip, upstream
from stepedit_core.foundation.audio import Audio
from stepedit_core.foundation.edits import parse_chain
from stepedit_core.foundation.stages import WorkItem
from stepedit_core.lifecycle.rounds import build_stages

from stepaudio_standins import shared_standins, tone


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Flags:
    """Wraps a stand-in tokenizer and notes the flags each `wav2token` call ran with."""

    def __init__(self, inner):
        self.inner = inner
        self.seen: list[tuple[bool, bool]] = []

    def wav2token(self, audio, sample_rate, enable_trim=True, energy_norm=True):
        self.seen.append((enable_trim, energy_norm))
        return self.inner.wav2token(audio, sample_rate, enable_trim, energy_norm)


def _flagged_tokenizer(src: str, folder):
    return _Flags(upstream.load_audio_tokenizer(src, folder))


def _engine(prompt_mode: str = "chain"):
    models, src = shared_standins()
    made = {
        "audio_tokenizer": functools.partial(_flagged_tokenizer, str(src)),
        "frontend": functools.partial(upstream.load_frontend, str(src)),
        "decoder": functools.partial(upstream.load_decoder, str(src)),
    }
    options = EngineOptions(
        models_dir=str(models),
        prompt_mode=prompt_mode,
        stepaudio_factories=made,
        stepaudio_greedy=True,
    )
    return make_engine("step-audio-editx", options)


def _run(engine, item, prompt_mode="chain"):
    stages = build_stages(engine, rounds=1, with_clone_round=False, prompt_mode=prompt_mode)
    return run_stages(stages, [item])[0]


def _item(path, chain: str) -> WorkItem:
    return row_item(0, "a", path, parse_chain(chain), text="hello world", seed=11)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clips") / "a.wav"
    sf.write(path, tone(1.2, 24000, 220.0, amplitude=0.8), 24000)  # peak over 0.6: gets capped
    return str(path)


def _independent(models, src):
    """Fresh stand-in tokenizer, front end and decoder, used directly (none of our wrappers)."""
    tokenizer = upstream.load_audio_tokenizer(str(src), layout.tokenizer_dir(models))
    frontend = upstream.load_frontend(str(src), layout.cosyvoice_dir(models))
    cosyvoice = upstream.load_decoder(str(src), layout.cosyvoice_dir(models))
    return tokenizer, frontend, cosyvoice


def _as_release_reads(path) -> torch.Tensor:
    """A WAV file read the way the release's edit path reads it: 16-bit samples / 32768, mono,
    peak capped at 0.6."""
    shorts, _ = sf.read(path, dtype="int16", always_2d=True)
    wav = torch.from_numpy(shorts.T.astype(np.float32) / 32768.0).mean(dim=0, keepdim=True)
    peak = float(wav.abs().max())
    return wav / peak * 0.6 if peak > 0.6 else wav


def _voice(frontend, tokenizer, wav, rate):
    codes, _, _ = tokenizer.wav2token(wav, rate)
    feat, _ = frontend.extract_speech_feat(wav, rate)
    embedding = frontend.extract_spk_embedding(wav, rate)
    return [c - 65536 for c in codes], feat, embedding


def _decode(cosyvoice, codes, voice) -> np.ndarray:
    prompt_codes, feat, embedding = voice
    speech = cosyvoice.token2wav_nonstream(
        torch.tensor([codes]),
        torch.tensor([prompt_codes]),
        feat.to(torch.bfloat16),
        embedding.to(torch.bfloat16),
    )
    return speech.float().numpy().reshape(-1)


def test_pcm16_equals_a_16_bit_wav_write_and_read(tmp_path):
    rng = np.random.default_rng(0)
    samples = rng.uniform(-1.0, 1.0, 48000).astype(np.float32)
    # values that land exactly on and next to half steps of the 16-bit grid
    halves = (np.arange(-200, 200) + 0.5) / np.float32(32767.0)
    samples[: halves.size] = halves.astype(np.float32)
    samples[-7:] = [1.0, -1.0, 0.0, 1.2, -1.2, 1e-7, -1e-7]  # saturation, the tiniest values
    path = tmp_path / "x.wav"
    sf.write(path, samples, 24000)  # soundfile's default for WAV: 16-bit PCM
    assert sf.info(path).subtype == "PCM_16"
    shorts, _ = sf.read(path, dtype="int16")
    ours = roundtrip.pcm16(Audio(samples, 24000))
    np.testing.assert_array_equal(ours.samples[:, 0], shorts.astype(np.float32) / 32768.0)
    assert ours.sample_rate == 24000
    assert not np.array_equal(ours.samples[:, 0], samples)  # it does change the audio


def test_codes_hash_is_over_comma_joined_codes():
    import hashlib

    assert roundtrip.codes_sha256([1, 20, 300]) == hashlib.sha256(b"1,20,300").hexdigest()


def test_two_edit_chain_round_trips_through_16_bit_audio(clip, tmp_path):
    engine = _engine()
    tokenize, edit, decode = engine.stages()
    out = _run(engine, _item(clip, "emotion=happy;style=whisper"))
    assert out.error is None, out.error
    record = out.records[0]
    assert record.status == "ok" and record.edit == "emotion=happy;style=whisper"

    # One round trip between the two passes: the edit stage decoded once and tokenized once;
    # the decode stage decoded the last pass.
    assert edit.parts.round_trip.decoder.cosyvoice.calls == 1
    assert edit.parts.round_trip.tokenizer.upstream.seen == [
        (True, True)
    ]  # release defaults: trim, norm
    assert tokenize.parts.tokenizer.upstream.seen == [(True, True)]
    assert decode.parts.decoder.cosyvoice.calls == 1

    passes = json.loads(record.engine_columns["passes_json"])
    assert [p["pass"] for p in passes] == [1, 2]
    assert [p["edit"] for p in passes] == ["emotion=happy", "style=whisper"]
    assert [p["input_from"] for p in passes] == ["round_input", "decoded_pass_1"]
    assert passes[0]["input_sha256"] == roundtrip.codes_sha256(
        record.engine_columns["input_tokens"]
    )
    assert passes[0]["input_codes"] == len(record.engine_columns["input_tokens"])
    assert passes[1]["output_sha256"] == roundtrip.codes_sha256(
        record.engine_columns["output_tokens"]
    )
    assert passes[1]["output_codes"] == len(record.engine_columns["output_tokens"])

    # Pass 1's output: the same edit alone with the same seed generates it.
    alone = _run(_engine(), _item(clip, "emotion=happy")).records[0]
    first_out = alone.engine_columns["output_tokens"]
    assert passes[0]["output_sha256"] == roundtrip.codes_sha256(first_out)
    assert (
        json.loads(alone.engine_columns["passes_json"])[0]["output_sha256"]
        == passes[0]["output_sha256"]
    )

    # Independently: decode pass 1 with the round's voice prompt, write and read 16-bit WAV,
    # cap the peak, tokenize with a fresh stand-in.
    models, src = shared_standins()
    tokenizer, frontend, cosyvoice = _independent(models, src)
    source = _as_release_reads(clip)
    voice = _voice(frontend, tokenizer, source, 24000)
    assert voice[0] == record.engine_columns["input_tokens"]
    decoded = _decode(cosyvoice, first_out, voice)
    wav_path = tmp_path / "pass1.wav"
    sf.write(wav_path, decoded, 24000)
    reread = _as_release_reads(wav_path)
    second_voice = _voice(frontend, tokenizer, reread, 24000)
    second_in = second_voice[0]
    assert passes[1]["input_sha256"] == roundtrip.codes_sha256(second_in)
    assert passes[1]["input_codes"] == len(second_in)
    assert second_in != first_out  # the model sees re-tokenized audio, not its own codes
    unquantised = _voice(frontend, tokenizer, torch.from_numpy(decoded)[None], 24000)[0]
    assert unquantised != second_in  # the 16-bit step shows in the codes (stand-in tokenizer)

    # Chain mode: the last pass is decoded with pass 2's input as the voice prompt, as the
    # release takes each edit's voice prompt from that edit's input clip.
    final = _decode(cosyvoice, record.engine_columns["output_tokens"], second_voice)
    got, _ = sf.read(__import__("io").BytesIO(record.audio_flac), dtype="float32")
    np.testing.assert_allclose(got, final, atol=1.0 / 32768 + 1e-6)  # FLAC is 16-bit
    first_voice_final = _decode(cosyvoice, record.engine_columns["output_tokens"], voice)
    assert not np.allclose(got, first_voice_final, atol=1.0 / 32768 + 1e-6)


def test_fixed_prompt_mode_keeps_the_source_voice_across_passes(clip):
    engine = _engine("fixed")
    out = _run(engine, _item(clip, "emotion=happy;style=whisper"), prompt_mode="fixed")
    assert out.error is None, out.error
    record = out.records[0]
    models, src = shared_standins()
    tokenizer, frontend, cosyvoice = _independent(models, src)
    voice = _voice(frontend, tokenizer, _as_release_reads(clip), 24000)
    final = _decode(cosyvoice, record.engine_columns["output_tokens"], voice)
    got, _ = sf.read(__import__("io").BytesIO(record.audio_flac), dtype="float32")
    np.testing.assert_allclose(got, final, atol=1.0 / 32768 + 1e-6)
    assert json.loads(record.engine_columns["passes_json"])[1]["input_from"] == "decoded_pass_1"


def test_three_edit_chain_makes_two_round_trips_and_one_edit_none(clip):
    engine = _engine()
    _, edit, decode = engine.stages()
    single = _run(engine, _item(clip, "denoise"))
    assert single.error is None and edit.parts.round_trip is None  # never loaded without a chain
    assert len(json.loads(single.records[0].engine_columns["passes_json"])) == 1
    out = _run(engine, _item(clip, "emotion=happy;style=whisper;denoise"))
    assert out.error is None, out.error
    assert edit.parts.round_trip.decoder.cosyvoice.calls == 2
    assert len(edit.parts.round_trip.tokenizer.upstream.seen) == 2
    assert decode.parts.decoder.cosyvoice.calls == 2  # one per row
    passes = json.loads(out.records[0].engine_columns["passes_json"])
    assert [p["input_from"] for p in passes] == ["round_input", "decoded_pass_1", "decoded_pass_2"]
    for earlier, later in zip(passes[:-1], passes[1:], strict=True):
        assert earlier["output_sha256"] != later["input_sha256"]  # always re-tokenized audio


def test_passes_are_sealed_into_the_record(clip):
    from stepedit_core.audit.records import record_digest

    record = _run(_engine(), _item(clip, "emotion=happy;vad")).records[0]
    row = record.to_row()
    assert record_digest(row) == record.record_sha256
    passes = json.loads(row["passes_json"])
    passes[1]["input_codes"] += 1
    assert record_digest(dict(row, passes_json=json.dumps(passes))) != record.record_sha256


def test_rounds_hand_each_other_16_bit_audio(clip, tmp_path):
    engine = _engine()
    assert engine.round_handoff is roundtrip.pcm16
    stages = build_stages(engine, rounds=2, with_clone_round=False)
    out = run_stages(stages, [_item(clip, "emotion=happy")])[0]
    assert out.error is None, out.error
    first, second = out.records
    assert first.status == second.status == "ok"

    # Independently: round 1's output decoded with the source's voice, written as a 16-bit WAV
    # and read back as the release's next iteration reads it, then tokenized.
    models, src = shared_standins()
    tokenizer, frontend, cosyvoice = _independent(models, src)
    voice = _voice(frontend, tokenizer, _as_release_reads(clip), 24000)
    assert voice[0] == first.engine_columns["input_tokens"]
    decoded = _decode(cosyvoice, first.engine_columns["output_tokens"], voice)
    wav_path = tmp_path / "iter1.wav"
    sf.write(wav_path, decoded, 24000)
    second_voice = _voice(frontend, tokenizer, _as_release_reads(wav_path), 24000)
    assert second.engine_columns["input_tokens"] == second_voice[0]
    unquantised = _voice(frontend, tokenizer, torch.from_numpy(decoded)[None], 24000)[0]
    assert (
        second.engine_columns["input_tokens"] != unquantised
    )  # the 16-bit step shows in round 2's codes

    # Round 1's record keeps its output as made (24-bit FLAC of the decoded audio), not the
    # 16-bit copy handed on; round 2 decodes with the 16-bit audio as its voice (chain mode).
    got, _ = sf.read(__import__("io").BytesIO(first.audio_flac), dtype="float32")
    np.testing.assert_allclose(got, np.clip(decoded, -1, 1), atol=2.0**-23 + 1e-7)
    final = _decode(cosyvoice, second.engine_columns["output_tokens"], second_voice)
    got, _ = sf.read(__import__("io").BytesIO(second.audio_flac), dtype="float32")
    np.testing.assert_allclose(got, final, atol=1.0 / 32768 + 1e-6)


def test_the_signal_engine_hands_rounds_on_untouched():
    assert make_engine("signal").round_handoff is None
