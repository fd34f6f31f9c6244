"""A clone speaks its target text without the paralinguistic tags and otherwise exactly as given:
dialect and language tags stay, no doubled or stray spaces, the same token ids as the clean text."""

from __future__ import annotations

import pytest
import tokenizer_folders

from stepedit_core.catalog.tags import remove_paralinguistic_tags
from stepedit_core.engines.stepaudio import prompts
from stepedit_core.engines.stepaudio.text_tokenizer import load_text_tokenizer
from stepedit_core.foundation.edits import PARALINGUISTIC_TAGS, EditSpec

CLONE = EditSpec("clone")


@pytest.mark.parametrize(
    ("tagged", "expected"),
    [
        ("[Laughter] Well, [Sigh] that went well.", "Well, that went well."),
        ("Great [Laughter], it is nice today [Sigh].", "Great, it is nice today."),
        ("Great[Laughter] today", "Great today"),
        ("word [Laughter]word", "word word"),
        ("hello [Laughter]", "hello"),
        ("hello [Laughter]  ", "hello"),
        ('He said "[Laughter] hi" and left.', 'He said "hi" and left.'),
        ("[Laughter][Sigh] two at once", "two at once"),
        ("line one [Sigh]\n[Uhm] line two", "line one\nline two"),
        ("今天[Sigh]天气很好[Laughter]", "今天天气很好"),
        ("今天可真累啊，终于可以歇一会儿了 [Breathing]。", "今天可真累啊，终于可以歇一会儿了。"),
        ("[Sichuanese] [Laughter] 你好 [Sigh]。", "[Sichuanese] 你好。"),
        ("[Cantonese]今日[Surprise-wa]好热", "[Cantonese]今日好热"),
        ("[Japanese]こんにちは[Uhm]", "[Japanese]こんにちは"),
        ("[Korean] 안녕하세요 [Question-ei]?", "[Korean] 안녕하세요?"),
        # what is not a paralinguistic tag of the vocabulary stays, whitespace and all
        ("  two  spaces [laughter] [Music]\ttab ", "  two  spaces [laughter] [Music]\ttab "),
        ("guo4 [Dissatisfaction-hnn] ok", "guo4 ok"),
        ("[Confirmation-en]", ""),
    ],
)
def test_paralinguistic_tags_leave_no_doubled_or_stray_spaces(tagged, expected):
    assert remove_paralinguistic_tags(tagged) == expected


def test_every_tag_of_the_vocabulary_is_removed_and_nothing_else():
    text = " ".join(f"a{i} {tag}" for i, tag in enumerate(PARALINGUISTIC_TAGS))
    assert remove_paralinguistic_tags(text) == " ".join(
        f"a{i}" for i in range(len(PARALINGUISTIC_TAGS))
    )


def test_clone_keeps_dialect_tags_and_the_text_as_given():
    spoken = prompts.spoken_text(CLONE, "[Sichuanese]今天[Sigh]天气很好")
    assert spoken == "[Sichuanese]今天天气很好"
    given = " Hello,  world. "  # the release hands the tokenizer the text untouched
    assert prompts.instruction_text(CLONE, "prompt words", given) == given
    with pytest.raises(ValueError, match="target_text"):
        prompts.instruction_text(CLONE, "prompt words", "[Laughter] ")
    # a paralinguistic edit still says the tagged text
    para = EditSpec("paralinguistic")
    assert prompts.spoken_text(para, "[Sichuanese]今天[Sigh]天气") == "[Sichuanese]今天[Sigh]天气"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tokenizer_folders.build_folder(
        tokenizer_folders.FOLDERS[0], tmp_path_factory.mktemp("tags")
    )
    return load_text_tokenizer(folder)


def _clone_ids(tokenizer, target: str) -> list[int]:
    return prompts.request_ids(
        tokenizer.encode, CLONE, "the prompt's words", target, [0, 1, 1024, 1025, 1026], "clone_x"
    )


def test_clone_ids_of_a_tagged_text_are_those_of_the_clean_text(tokenizer):
    tagged = _clone_ids(tokenizer, "[Sichuanese] [Laughter] Great [Sigh], catalog scale.")
    assert tagged == _clone_ids(tokenizer, "[Sichuanese] Great, catalog scale.")
    # the stray space the old removal left ("Great , ...") is another id sequence
    assert tagged != _clone_ids(tokenizer, "[Sichuanese] Great , catalog scale.")
    # the dialect tag reaches the model: its characters are in the human turn's ids
    human = tagged[tagged.index(prompts.EOT_ID) + 1 :]
    pieces = "".join(tokenizer.backend.id_to_token(i) for i in human)
    assert pieces.count("[Sichuanese]") == 1
