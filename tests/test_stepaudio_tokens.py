"""Dual-codebook token handling and the published model folder layout."""

from __future__ import annotations

import json
import shutil

import pytest

from stepedit_core.engines.stepaudio import expected_layout, layout, missing_files, tokens

from stepaudio_standins import make_standin_models, shared_standins


def test_interleave_two_vq02_then_three_vq06_and_drops_partial_groups():
    vq02 = [1, 2, 3, 4, 5]  # 2 groups + a spare code
    vq06 = [10, 11, 12, 13, 14, 15, 16]  # 2 groups + a spare code
    codes = tokens.interleave(vq02, vq06)
    assert codes == [1, 2, 1034, 1035, 1036, 3, 4, 1037, 1038, 1039]
    assert tokens.split(codes) == ([1, 2, 3, 4], [10, 11, 12, 13, 14, 15])
    assert tokens.interleave([1], [1, 2, 3]) == []


def test_text_form_and_ids():
    codes = [0, 1023, 1024, 5119, 77]
    text = tokens.to_text(codes)
    assert text == "<audio_0><audio_1023><audio_1024><audio_5119><audio_77>"
    assert tokens.from_text(text + "\n") == codes
    assert tokens.to_ids(codes) == [65536, 66559, 66560, 70655, 65613]
    with pytest.raises(tokens.TokenError, match="unexpected text"):
        tokens.from_text("<audio_1> <audio_2>")
    with pytest.raises(tokens.TokenError, match="outside"):
        tokens.from_text("<audio_5120>")


def test_ids_to_codes_accepts_whole_groups_of_audio_ids():
    codes = [5, 6, 2000, 3000, 4000] * 2
    assert tokens.ids_to_codes(tokens.to_ids(codes)) == codes


@pytest.mark.parametrize(
    ("tail", "padding"),
    [
        ([7], [0, 1024, 1024, 1024]),
        ([7, 8], [1024, 1024, 1024]),
        ([7, 8, 2000], [1024, 1024]),
        ([7, 8, 2000, 3000], [1024]),
    ],
)
def test_a_trailing_partial_group_is_padded_as_the_release_decoder_does(tail, padding):
    whole = [5, 6, 2000, 3000, 4000]
    assert tokens.pad_partial_group(whole + tail) == whole + tail + padding
    assert tokens.ids_to_codes(tokens.to_ids(whole + tail)) == whole + tail + padding
    assert tokens.pad_partial_group(whole) == whole


def test_validation_still_refuses_partial_groups_and_misplaced_codes():
    with pytest.raises(tokens.TokenError, match="not a whole number of groups of 5"):
        tokens.validate_codes([5, 6, 2000, 3000])
    with pytest.raises(tokens.TokenError, match="slot 1\\) is 2000"):
        tokens.ids_to_codes(tokens.to_ids([5, 6, 2000, 3000, 4000, 9, 2000]))


@pytest.mark.parametrize(
    ("ids", "needle"),
    [
        ([], "generated no audio tokens"),
        ([65536 + 5, 1234, 65536 + 2000], "not audio tokens (first at position 1: id 1234"),
        ([65536 + 5120], "not audio tokens"),
        (tokens.to_ids([5, 6, 7, 3000, 4000]), "slot 2) is 7: expected a vq06 code"),
        (tokens.to_ids([5, 2000, 2000, 3000, 4000]), "slot 1) is 2000: expected a vq02 code"),
    ],
)
def test_ids_to_codes_rejects_bad_generations(ids, needle):
    with pytest.raises(tokens.TokenError) as info:
        tokens.ids_to_codes(ids)
    assert needle in str(info.value)


def test_rates():
    assert abs(tokens.CODES_PER_SECOND - 41.667) < 1e-3
    assert tokens.seconds(4167) == pytest.approx(100.0, abs=0.01)


def test_standin_models_folder_is_complete():
    models, _ = shared_standins()
    assert missing_files(models) == []
    assert layout.not_ready_message(models) is None


def test_missing_folder_lists_every_required_file(tmp_path):
    missing = missing_files(tmp_path / "nope")
    assert "Step-Audio-Tokenizer/linguistic_tokenizer.npy" in missing
    assert "Step-Audio-EditX/CosyVoice-300M-25Hz/flow.pt" in missing
    assert "Step-Audio-EditX/model.safetensors.index.json" in missing
    assert missing_files(None) == missing
    message = layout.not_ready_message(tmp_path / "nope")
    assert "does not exist" in message and "Step-Audio-Tokenizer/" in message
    assert "needs --models DIR" in layout.not_ready_message(None)


def test_incomplete_folder_names_the_missing_files(tmp_path):
    models, _ = make_standin_models(tmp_path)
    editx = models / "Step-Audio-EditX"
    index = json.loads((editx / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    (editx / shard).unlink()
    (editx / "CosyVoice-300M-25Hz" / "hift.pt").unlink()
    shutil.rmtree(models / "Step-Audio-Tokenizer" / "dengcunqin")
    (models / "Step-Audio-Tokenizer" / "speech_tokenizer_v1.onnx").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 523000000\n"
    )
    missing = missing_files(models)
    assert f"Step-Audio-EditX/{shard}" in missing
    assert "Step-Audio-EditX/CosyVoice-300M-25Hz/hift.pt" in missing
    assert any(
        m.startswith("Step-Audio-Tokenizer/dengcunqin/") and m.endswith("am.mvn") for m in missing
    )
    assert (
        "Step-Audio-Tokenizer/speech_tokenizer_v1.onnx (a Git LFS pointer, not the file "
        "(run `git lfs pull`))"
    ) in missing
    message = layout.not_ready_message(models)
    assert "incomplete" in message and shard in message and "expected layout" in message


def test_broken_weights_index_is_reported(tmp_path):
    models, _ = make_standin_models(tmp_path)
    (models / "Step-Audio-EditX" / "model.safetensors.index.json").write_text("{not json")
    assert any("model.safetensors.index.json (unreadable" in m for m in missing_files(models))


def test_expected_layout_names_both_folders_and_key_files():
    text = expected_layout()
    for needle in (
        "Step-Audio-Tokenizer/",
        "Step-Audio-EditX/",
        "CosyVoice-300M-25Hz/",
        "campplus.onnx",
        "linguistic_tokenizer.npy",
        "speech_tokenizer_v1.onnx",
        "tokenizer.model",
        "model.safetensors.index.json",
        layout.PARAFORMER_DIR,
    ):
        assert needle in text
