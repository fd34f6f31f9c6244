"""The LLM's text ids equal those of the reference stack (transformers 4.53.3), whatever
transformers is installed: goldens written by tests/goldens/make_tokenizer_goldens.py over the
synthetic folders of tests/tokenizer_folders.py, which the tests rebuild byte for byte."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import tokenizer_folders
from tokenizers import models as tokenizer_models

from stepedit_core.engines.stepaudio import prompts, tokens
from stepedit_core.engines.stepaudio.text_tokenizer import (
    TextTokenizerError,
    bpe_merges,
    load_text_tokenizer,
    read_settings,
)
from stepedit_core.foundation.edits import STEPAUDIO, parse_edit, types_for
from stepedit_flows.cli import main

GOLDENS = json.loads(
    (Path(__file__).parent / "goldens" / "tokenizer_ids.json").read_text(encoding="utf-8")
)
FOLDER_NAMES = [spec.name for spec in tokenizer_folders.FOLDERS]
CASES = {case["id"]: case for case in GOLDENS["cases"]}
_LOADED: dict[str, object] = {}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return tokenizer_folders.build_all(tmp_path_factory.mktemp("tokenizers"))


def _tokenizer(folders: dict[str, Path], name: str):
    if name not in _LOADED:
        _LOADED[name] = load_text_tokenizer(folders[name])
    return _LOADED[name]


def _request(tokenizer, case: dict) -> list[int]:
    return prompts.request_ids(
        tokenizer.encode,
        parse_edit(case["edit"]),
        case["text"],
        case["target_text"],
        case["codes"],
        case["speaker"],
    )


def test_goldens_come_from_the_reference_and_cover_every_request_kind():
    assert GOLDENS["reference"]["transformers"] == "4.53.3"
    assert set(GOLDENS["ids"]) == set(FOLDER_NAMES)
    kinds = {(c["id"].split("_")[0], parse_edit(c["edit"]).type) for c in GOLDENS["cases"]}
    for kind in types_for(STEPAUDIO):
        assert {("en", kind), ("zh", kind)} <= kinds


def test_rebuilt_folders_are_the_ones_the_goldens_were_written_from(folders):
    for name, folder in folders.items():
        assert tokenizer_folders.folder_digest(folder) == GOLDENS["folders"][name]["digest"], name


def test_instruction_texts_are_the_goldens(folders):
    for case in GOLDENS["cases"]:
        spec = parse_edit(case["edit"])
        assert (
            prompts.instruction_text(spec, case["text"], case["target_text"])
            == (case["human_text"])
        )


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_complete_prompt_ids_equal_the_reference(folders, name):
    tokenizer = _tokenizer(folders, name)
    differing = [
        case_id
        for case_id, case in CASES.items()
        if _request(tokenizer, case) != GOLDENS["ids"][name][case_id]
    ]
    assert differing == []


@pytest.mark.parametrize("name", FOLDER_NAMES)
def test_single_encode_calls_equal_the_reference(folders, name):
    tokenizer = _tokenizer(folders, name)
    got = [tokenizer.encode(text) for text in GOLDENS["text_inputs"]]
    assert got == GOLDENS["texts"][name]


def test_reference_defaults_put_bos_in_every_encode_call(folders):
    with_bos = _tokenizer(folders, "unigram_no_keys")
    without = _tokenizer(folders, "unigram_nobos_legacy")
    assert with_bos.encode("human\n")[0] == prompts.BOS_ID
    assert without.encode("human\n")[0] != prompts.BOS_ID
    ids = _request(with_bos, CASES["en_emotion"])
    # [BOS][BOT][BOS] system ... : the release's framing plus the BOS of each encode call
    assert ids[:3] == [prompts.BOS_ID, prompts.BOT_ID, prompts.BOS_ID]
    human = ids.index(prompts.EOT_ID) + 1
    assert ids[human : human + 2] == [prompts.BOT_ID, prompts.BOS_ID]
    clone = _request(with_bos, CASES["en_clone"])
    # leading, system, human role, assistant role; none in the target text (the newline
    # subtraction removed its BOS)
    assert clone.count(prompts.BOS_ID) == 4


def test_legacy_puts_a_space_piece_between_audio_and_newline(folders):
    text = tokens.to_text([7]) + "\n"
    legacy = _tokenizer(folders, "unigram_no_keys")
    modern = _tokenizer(folders, "unigram_not_legacy")
    space = legacy.backend.token_to_id("\u2581")
    newline = legacy.backend.token_to_id("<0x0A>")
    assert legacy.encode(text) == [prompts.BOS_ID, 65536 + 7, space, newline]
    assert modern.encode(text) == [prompts.BOS_ID, 65536 + 7, newline]


def test_sentencepiece_algorithm_is_kept(folders):
    assert isinstance(
        _tokenizer(folders, "unigram_no_keys").backend.model, tokenizer_models.Unigram
    )
    assert isinstance(_tokenizer(folders, "bpe_no_keys").backend.model, tokenizer_models.BPE)


def test_tokenizer_json_is_used_unless_the_config_forces_a_rebuild(folders):
    assert _tokenizer(folders, "unigram_json_no_keys").source == "tokenizer.json"
    assert _tokenizer(folders, "unigram_json_no_prefix_space").source == "tokenizer.model"
    assert _tokenizer(folders, "unigram_no_keys").source == "tokenizer.model"


def test_settings_defaults_and_refusals(tmp_path):
    settings = read_settings(tmp_path)
    assert (settings.add_bos_token, settings.add_eos_token, settings.legacy) == (True, False, True)
    with pytest.raises(TextTokenizerError, match="neither tokenizer.json nor tokenizer.model"):
        load_text_tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "GPT2Tokenizer"})
    )
    with pytest.raises(TextTokenizerError, match="GPT2Tokenizer"):
        read_settings(tmp_path)


def test_bpe_merges_follow_the_score_of_the_joined_piece():
    vocab = [("a", -5.0), ("b", -6.0), ("c", -7.0), ("bc", -1.0), ("ab", -2.0), ("abc", -3.0)]
    assert bpe_merges(vocab) == [("b", "c"), ("a", "b"), ("ab", "c"), ("a", "bc")]


# `stepedit prompt --ids`


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    spec = dataclasses.replace(tokenizer_folders.FOLDERS[0], name="Step-Audio-EditX")
    tokenizer_folders.build_folder(spec, root)
    return root


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _prompt_args(models: Path, case: dict) -> list[str]:
    argv = ["prompt", "--engine", "step-audio-editx", "--models", str(models)]
    argv += ["--edit", case["edit"], "--text", case["text"]]
    if case["target_text"]:
        argv += ["--target-text", case["target_text"]]
    if case["speaker"]:
        argv += ["--speaker", case["speaker"]]
    return argv + ["--audio-codes", ",".join(map(str, case["codes"])), "--ids"]


@pytest.mark.parametrize("case_id", ["en_emotion", "zh_clone", "en_paralinguistic", "zh_vad"])
def test_prompt_ids_cli_prints_the_reference_ids(models_dir, case_id, capsys):
    assert tokenizer_folders.FOLDERS[0].name == "unigram_no_keys"
    code, out, err = _cli(_prompt_args(models_dir, CASES[case_id]), capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["input_ids"] == GOLDENS["ids"]["unigram_no_keys"][case_id]
    assert report["tokenizer"]["source"] == "tokenizer.model"


def test_prompt_without_ids_still_prints_the_instruction(models_dir, capsys):
    case = CASES["en_emotion"]
    code, out, _ = _cli(["prompt", "--edit", case["edit"], "--text", case["text"]], capsys)
    assert code == 0 and out == case["human_text"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"--models": None}, "--ids needs --models"),
        ({"--audio-codes": "1,2,1024"}, "not a whole number of groups"),
        ({"--audio-codes": "1,x"}, "integers separated by commas"),
        ({"--speaker": None, "--edit": "clone", "--target-text": "say this"}, "speaker name"),
        ({"--speaker": "clone_abc"}, "applies only to clone"),
    ],
    ids=str,
)
def test_prompt_ids_cli_refuses_bad_requests(models_dir, change, needle, capsys):
    argv = _prompt_args(models_dir, CASES["en_emotion"])
    for flag, value in change.items():
        if flag in argv:
            at = argv.index(flag)
            del argv[at : at + 2]
        if value is not None:
            argv[-1:-1] = [flag, value]
    code, _, err = _cli(argv, capsys)
    assert code == 2 and needle in err


# `added_tokens_decoder` entries whose flags differ from the model's own pieces


def _golden_text(folder: str, text: str) -> list[int]:
    return GOLDENS["texts"][folder][GOLDENS["text_inputs"].index(text)]


@pytest.mark.parametrize(
    ("flagged", "plain", "text"),
    [
        ("bpe_added_strip_flags", "bpe_no_keys", "x<audio_1024> y"),  # single_word
        ("bpe_added_strip_flags", "bpe_no_keys", " <|EOT|> spaced <|BOT|> "),  # lstrip, rstrip
        ("bpe_added_strip_flags", "bpe_no_keys", "<|NEW|> new token <pad>"),  # a new token
        ("unigram_json_added_flags", "unigram_json_no_keys", "<audio_7>\nnext"),  # rstrip
    ],
)
def test_entries_whose_flags_differ_are_added_again(folders, flagged, plain, text):
    # the reference's ids change with the flags, and ours follow them
    assert _golden_text(flagged, text) != _golden_text(plain, text)
    assert _tokenizer(folders, flagged).encode(text) == _golden_text(flagged, text)


def test_entries_with_the_models_own_flags_change_nothing(folders):
    same = _tokenizer(folders, "unigram_added_same_flags")
    assert GOLDENS["texts"]["unigram_added_same_flags"] == GOLDENS["texts"]["unigram_no_keys"]
    assert same.backend.get_added_tokens_decoder()[65536 + 7].normalized is False


def test_normalized_audio_entries_still_match_before_normalisation(folders):
    # The reference keeps the piece's own (raw-text) entry next to the normalised one, so a
    # newline after an audio token keeps its `▁`; later tokenizers releases would drop it.
    text = "<audio_7>\nnext"
    flagged = _tokenizer(folders, "unigram_added_audio_normalized")
    assert flagged.encode(text) == _golden_text("unigram_no_keys", text)
    space = flagged.backend.token_to_id("\u2581")
    assert flagged.encode(text)[:3] == [prompts.BOS_ID, 65536 + 7, space]


def test_reference_tokens_keep_the_raw_match_of_tokenizers_0_21():
    from tokenizers import AddedToken

    from stepedit_core.engines.stepaudio.added_tokens import reference_tokens

    existing = [
        AddedToken("<audio_0>", normalized=False, special=False),
        AddedToken("<s>", normalized=False, special=True),
    ]
    given = [
        AddedToken("<audio_0>", normalized=True, lstrip=True),  # re-added: raw entry kept
        AddedToken("<s>", normalized=True, special=True),  # special: never recorded again
        AddedToken("<new>", normalized=True),  # only entry: normalised
    ]
    got = reference_tokens(existing, given)
    assert [(t.content, t.normalized) for t in got] == [
        ("<audio_0>", False),
        ("<s>", False),
        ("<new>", True),
    ]
    assert got[0].lstrip is True and got[1].special is True


def test_an_entry_without_content_is_refused(tmp_path):
    config = {"added_tokens_decoder": {"7": {"special": True}}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TextTokenizerError, match="entry 7 has no 'content'"):
        read_settings(tmp_path)
