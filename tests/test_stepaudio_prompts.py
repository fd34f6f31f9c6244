"""Golden tests of what Step-Audio-EditX reads: instruction texts, system prompts, id framing."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from stepedit_core.engines.stepaudio import instruction_text, prompt_preview, prompts, tokens
from stepedit_core.foundation.edits import SPEEDS, EditSpec

# sha256 of the two system prompts as published in stepfun-ai/Step-Audio-EditX config/prompts.py
EDIT_SYSTEM_SHA256 = "a0d0158175cfdb236a9815fa9a62fc715126fc74e34ca3dc534d20fe2896ef75"
CLONE_TEMPLATE_SHA256 = "ad1cc8aba22d1570a8a815e39c28950137c577d15c5af8b7c99ba9a843e1dcef"


def test_edit_system_prompt_is_the_published_text():
    text = prompts.EDIT_SYSTEM_PROMPT
    assert hashlib.sha256(text.encode()).hexdigest() == EDIT_SYSTEM_SHA256
    assert text.startswith(
        "As a highly skilled audio editing and tuning specialist, you excel in interpreting user "
        "instructions and applying precise adjustments to meet their needs."
    )
    assert text.count("\n# ") == 4 and text.endswith("enhancements.\n")


def test_clone_system_prompt_is_the_published_template():
    rendered = prompts.clone_system_prompt("{speaker}", "{prompt_text}", "{prompt_wav_tokens}")
    assert hashlib.sha256(rendered.encode()).hexdigest() == CLONE_TEMPLATE_SHA256
    assert rendered == (
        "Generate audio with the following timbre, prosody and speaking style\n\n"
        "[speaker_start]\nspeaker name: {speaker}\nspeaker prompt text: \n{prompt_text}\n"
        "speaker audio tokens: \n{prompt_wav_tokens}\n[speaker_end]\n"
    )


GOLDEN = [
    (
        EditSpec("emotion", "happy"),
        " hello world ",
        None,
        "Make the following audio more happy. The text corresponding to the audio is: "
        "hello world\n",
    ),
    (
        EditSpec("emotion", "remove"),
        "hello world",
        None,
        "Remove any emotion in the following audio and the reference text is: hello world\n",
    ),
    (
        EditSpec("style", "whisper"),
        "hello world",
        None,
        "Make the following audio more whisper style. The text corresponding to the audio is: "
        "hello world\n",
    ),
    (
        EditSpec("style", "act_coy"),
        "hello world",
        None,
        "Make the following audio more act_coy style. The text corresponding to the audio is: "
        "hello world\n",
    ),
    (
        EditSpec("style", "remove"),
        "hello world",
        None,
        "Remove any speaking styles in the following audio and the reference text is: "
        "hello world\n",
    ),
    *[
        (
            EditSpec("speed", option),
            "hello world",
            None,
            f"Make the following audio more {option}. The text corresponding to the audio is: "
            "hello world\n",
        )
        for option in SPEEDS
    ],
    (
        EditSpec("denoise"),
        None,
        None,
        "Remove any noise from the given audio while preserving the voice content clearly. "
        "Ensure that the speech quality remains intact with minimal distortion, and eliminate "
        "all noise from the audio.\n",
    ),
    (
        EditSpec("vad"),
        None,
        None,
        "Remove any silent portions from the given audio while preserving the voice content "
        "clearly. Ensure that the speech quality remains intact with minimal distortion, and "
        "eliminate all silence from the audio.\n",
    ),
    (
        EditSpec("paralinguistic"),
        "good morning",
        "[Laughter] good morning\n",
        "Add some non-verbal sounds to make the audio more natural, the new text is : "
        "[Laughter] good morning\n  The text corresponding to the audio is: good morning\n",
    ),
    (EditSpec("clone"), "prompt words", " what to say ", " what to say "),
]


@pytest.mark.parametrize(("spec", "text", "target", "expected"), GOLDEN, ids=str)
def test_instruction_text_golden(spec, text, target, expected):
    assert instruction_text(spec, text, target) == expected


def test_speed_more_options_read_like_the_release():
    spec = EditSpec("speed", "more slower")
    assert instruction_text(spec, "hi").startswith("Make the following audio more more slower.")


@pytest.mark.parametrize(
    ("spec", "text", "target", "needle"),
    [
        (EditSpec("emotion", "joy"), "hi", None, "'joy'; valid options: happy, angry"),
        (EditSpec("emotion"), "hi", None, "no option; valid options: happy"),
        (EditSpec("style", "loud"), "hi", None, "valid options: serious, arrogant"),
        (
            EditSpec("speed", "1.25"),
            "hi",
            None,
            "'1.25'; valid options: faster, slower, more faster, more slower",
        ),
        (EditSpec("loudness", "ebu"), None, None, "does not support edit type 'loudness'"),
        (EditSpec("vad", "0.3"), None, None, "vad takes no option"),
        (EditSpec("emotion", "happy"), "  ", None, "needs the transcript"),
        (EditSpec("paralinguistic"), "hi", None, "needs 'target_text'"),
        (EditSpec("clone"), "hi", "", "needs 'target_text'"),
        (EditSpec("clone"), None, "say this", "needs the transcript"),
    ],
    ids=str,
)
def test_instruction_text_errors_name_the_problem(spec, text, target, needle):
    with pytest.raises(ValueError) as info:
        instruction_text(spec, text, target)
    assert needle in str(info.value)


def _letters(text: str) -> list[int]:
    """A stub tokenizer: one id per character (ids 1000 + ord)."""
    return [1000 + ord(c) for c in text]


def test_edit_prompt_framing():
    instruction = (
        "Make the following audio more happy. The text corresponding to the audio is: hi\n"
    )
    audio = tokens.to_text([5, 6, 1030, 1031, 1032])
    ids = prompts.edit_prompt_ids(_letters, instruction, audio)
    expected = (
        [1, 4]
        + _letters("system\n" + prompts.EDIT_SYSTEM_PROMPT)
        + [3]
        + [4]
        + _letters("human\n")
        + _letters(instruction + "\n" + audio + "\n")
        + [3]
        + [4]
        + _letters("assistant\n")
    )
    assert ids == expected


def test_clone_prompt_framing_encodes_target_as_a_line_continuation():
    def dummy_prefix(text: str) -> list[int]:  # like sentencepiece: a marker before the text
        return [999] + _letters(text)

    ids = prompts.clone_prompt_ids(dummy_prefix, "clone_abc", "prompt words", "<audio_1>", "say")
    system = prompts.clone_system_prompt("clone_abc", "prompt words", "<audio_1>")
    expected = (
        [1, 4]
        + dummy_prefix("system\n" + system)
        + [3]
        + [4]
        + dummy_prefix("human\n")
        + _letters("say")
        + [3]
        + [4]
        + dummy_prefix("assistant\n")
    )
    assert ids == expected


def test_framing_with_the_standin_tokenizer_maps_audio_tokens_to_ids():
    from stepedit_core.engines.stepaudio.text_tokenizer import load_text_tokenizer

    from stepaudio_standins import shared_standins

    models, _ = shared_standins()
    tokenizer = load_text_tokenizer(models / "Step-Audio-EditX")
    codes = [0, 1023, 1024, 5119, 2000] * 3
    instruction = instruction_text(EditSpec("emotion", "sad"), "hello world")
    ids = prompts.edit_prompt_ids(tokenizer.encode, instruction, tokens.to_text(codes))
    audio_ids = [i for i in ids if i >= tokens.AUDIO_ID_OFFSET]
    assert audio_ids == tokens.to_ids(codes)
    assert ids[:2] == [1, 4] and ids.count(3) == 2 and ids.count(4) == 3
    assert ids[-len(tokenizer.encode("assistant\n")) - 1] == 4


def test_clone_speaker_name_is_stable_and_depends_on_text_and_audio():
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((5000, 2)).astype(np.float32)
    name = prompts.clone_speaker_name("hello", samples)
    assert name.startswith("clone_") and len(name) == len("clone_") + 16
    assert prompts.clone_speaker_name("hello", samples.copy()) == name
    assert prompts.clone_speaker_name("hello!", samples) != name
    assert prompts.clone_speaker_name("hello", samples[::-1].copy()) != name


def test_prompt_preview_shows_turns_without_audio_tokens():
    preview = prompt_preview(EditSpec("emotion", "happy"), "hello world")
    assert preview.startswith("<|BOT|>system\nAs a highly skilled")
    assert "<|BOT|>human\nMake the following audio more happy." in preview
    assert preview.endswith("<|BOT|>assistant\n") and "<audio_" not in preview
    clone = prompt_preview(EditSpec("clone"), "prompt words", "say this")
    assert "speaker prompt text: \nprompt words\n" in clone
    assert "<|BOT|>human\nsay this<|EOT|>" in clone


def test_importing_the_package_and_engine_loads_no_torch():
    code = (
        "import sys\n"
        "import stepedit_core.engines.stepaudio as p\n"
        "from stepedit_core.engines import make_engine\n"
        "from stepedit_core.foundation.edits import EditSpec\n"
        "e = make_engine('step-audio-editx')\n"
        "e.supports(EditSpec('emotion', 'happy'))\n"
        "p.missing_files('/nonexistent')\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_clone_speaks_the_target_text_without_its_tags_and_paralinguistic_adds_them():
    tagged = "[Laughter] Well, [Sigh] that went well."
    clone, para = EditSpec("clone"), EditSpec("paralinguistic")
    assert prompts.spoken_text(clone, tagged) == "Well, that went well."
    assert instruction_text(clone, "the prompt's words", tagged) == "Well, that went well."
    # round 1 after the clone: the transcript is the plain text, the instruction asks for tags
    text = prompts.spoken_text(clone, tagged)
    instruction = instruction_text(para, text, tagged)
    assert f"the new text is : {tagged}\n" in instruction and f"is: {text}\n" in instruction
    assert prompts.spoken_text(para, tagged) == tagged
