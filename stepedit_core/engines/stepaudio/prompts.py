"""What Step-Audio-EditX reads: instruction texts, system prompts and the chat framing in ids.

The wording of every instruction, both system prompts and the way turns are framed are part of
the model's training format, so they are reproduced character for character (trailing spaces
and newlines included) from the public Step-Audio-EditX release. Nothing here imports torch or
transformers: `encode` is any callable that turns text into token ids (the model folder's
tokenizer in the engine, a stub in tests).

Framing (ids): `[BOS]`, then the system turn `[BOT] + encode("system\\n" + system_prompt) + [EOT]`,
then the human turn, then the answer is opened with `[BOT] + encode("assistant\\n")`. As in the
public release, the human turn encodes its role and its content in two separate calls:
`[BOT] + encode("human\\n") + encode(content) + [EOT]`, where an edit's content is
`instruction + "\\n" + audio_token_string + "\\n"` and a clone's content is the target text,
encoded as the continuation of a newline (`encode("\\n" + text)` minus the ids of
`encode("\\n")`), so the text is tokenized as it would be mid-line.

`encode` must behave like the release's `tokenizer.encode` call (see `text_tokenizer`): with the
release's defaults that call itself starts with BOS, so each encoded piece above carries its own
BOS after the `[BOT]` (and the clone's newline subtraction drops it from the target text). The
framing here adds nothing of its own for that; it only calls `encode` where the release does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from stepedit_core.catalog.tags import remove_paralinguistic_tags
from stepedit_core.engines.stepaudio import tokens
from stepedit_core.foundation.edits import PARALINGUISTIC_TAGS, STEPAUDIO, EditSpec, refusal

BOS_ID = 1
EOT_ID = 3  # ends a turn; also the id the model emits when the audio is complete
BOT_ID = 4  # begins a turn
PAD_ID = 0

EDIT_SYSTEM_PROMPT = (
    "As a highly skilled audio editing and tuning specialist, you excel in interpreting user "
    "instructions and applying precise adjustments to meet their needs. Your expertise spans a "
    "wide range of enhancement capabilities, including but not limited to:\n"
    "# Emotional Enhancement\n"
    "# Speaking Style Transfer\n"
    "# Non-linguistic Adjustments\n"
    "# Audio Tuning & Editing\n"
    "Note: You will receive instructions in natural language and are expected to accurately "
    "interpret and execute the most suitable audio edits and enhancements.\n"
)

_CLONE_HEADER = "Generate audio with the following timbre, prosody and speaking style\n\n"

DENOISE_INSTRUCTION = (
    "Remove any noise from the given audio while preserving the voice content clearly. Ensure "
    "that the speech quality remains intact with minimal distortion, and eliminate all noise "
    "from the audio.\n"
)
VAD_INSTRUCTION = (
    "Remove any silent portions from the given audio while preserving the voice content "
    "clearly. Ensure that the speech quality remains intact with minimal distortion, and "
    "eliminate all silence from the audio.\n"
)
# The option-taking edits: "{option}" and the stripped transcript "{text}" are filled in.
MORE_INSTRUCTION = (
    "Make the following audio more {option}. The text corresponding to the audio is: {text}\n"
)
MORE_STYLE_INSTRUCTION = (
    "Make the following audio more {option} style. The text corresponding to the audio is: {text}\n"
)
REMOVE_EMOTION_INSTRUCTION = (
    "Remove any emotion in the following audio and the reference text is: {text}\n"
)
REMOVE_STYLE_INSTRUCTION = (
    "Remove any speaking styles in the following audio and the reference text is: {text}\n"
)
PARALINGUISTIC_INSTRUCTION = (
    "Add some non-verbal sounds to make the audio more natural, the new text is : "
    "{target_text}\n  The text corresponding to the audio is: {text}\n"
)
# edit type -> (instruction, instruction for the option `remove`); options come from the table
_OPTION_EDITS = {
    "emotion": (MORE_INSTRUCTION, REMOVE_EMOTION_INSTRUCTION),
    "style": (MORE_STYLE_INSTRUCTION, REMOVE_STYLE_INSTRUCTION),
    "speed": (MORE_INSTRUCTION, None),
}
Encode = Callable[[str], Sequence[int]]


def clone_system_prompt(speaker: str, prompt_text: str, prompt_audio_tokens: str) -> str:
    """The system prompt of zero-shot cloning (note the spaces after the two colons)."""
    return (
        _CLONE_HEADER
        + "[speaker_start]\n"
        + f"speaker name: {speaker}\n"
        + "speaker prompt text: \n"
        + f"{prompt_text}\n"
        + "speaker audio tokens: \n"
        + f"{prompt_audio_tokens}\n"
        + "[speaker_end]\n"
    )


def _clean(text: str | None) -> str:
    return (text or "").strip()


def _require_text(spec: EditSpec, text: str | None, what: str = "text") -> str:
    value = _clean(text)
    if not value:
        raise ValueError(f"edit {spec} needs the transcript of the audio ('{what}')")
    return value


def spoken_text(spec: EditSpec, target_text: str | None) -> str:
    """What the audio says after an edit that changes the text.

    A clone speaks the target text without its paralinguistic tags (a later paralinguistic
    edit inserts them, as in the model's benchmark protocol) and otherwise exactly as given:
    dialect and language tags such as `[Sichuanese]` stay, and so does the whitespace, as the
    release passes the text to the tokenizer untouched. A paralinguistic edit's output says
    the tagged text.
    """
    if spec.type == "clone":
        return remove_paralinguistic_tags(target_text or "")
    return _clean(target_text)


def instruction_text(spec: EditSpec, text: str | None, target_text: str | None = None) -> str:
    """The exact text of the human turn's instruction (without the audio tokens).

    For `clone` this is what the clone says (`spoken_text`): the whole human turn of a clone
    prompt (the prompt transcript and the voice go into the system prompt, see
    `clone_system_prompt`). Raises ValueError naming the bad edit, option or missing text and
    the valid choices (read from the edit table). `text` and `target_text` are stripped of
    surrounding whitespace, except a clone's target text, which is spoken as given.
    """
    problem = refusal(STEPAUDIO, spec)
    if problem is not None:
        raise ValueError(problem)
    kind = spec.type
    if kind in _OPTION_EDITS:
        instruction, remove_instruction = _OPTION_EDITS[kind]
        transcript = _require_text(spec, text)
        if spec.option == "remove" and remove_instruction is not None:
            return remove_instruction.format(text=transcript)
        return instruction.format(option=spec.option, text=transcript)
    if kind in ("denoise", "vad"):
        return DENOISE_INSTRUCTION if kind == "denoise" else VAD_INSTRUCTION
    if kind == "paralinguistic":
        transcript = _require_text(spec, text)
        new_text = _clean(target_text)
        if not new_text:
            raise ValueError(
                "edit paralinguistic needs 'target_text': the transcript with tags such as "
                + ", ".join(PARALINGUISTIC_TAGS)
            )
        return PARALINGUISTIC_INSTRUCTION.format(target_text=new_text, text=transcript)
    # clone: the prompt clip's transcript goes into the system prompt
    _require_text(spec, text)
    new_text = spoken_text(spec, target_text)
    if not new_text.strip():
        raise ValueError("edit clone needs 'target_text': what the cloned voice should say")
    return new_text


def clone_speaker_name(prompt_text: str, samples: np.ndarray) -> str:
    """A stable speaker name for the clone prompt, derived like the public release's:
    sha256 over the prompt text and the first and last 1000 float32 samples (channel-major)."""
    flat = np.ascontiguousarray(np.asarray(samples, dtype=np.float32).T).reshape(-1)
    if flat.size > 2000:
        flat = np.concatenate([flat[:1000], flat[-1000:]])
    digest = hashlib.sha256()
    digest.update(prompt_text.encode("utf-8"))
    digest.update(flat.tobytes())
    return f"clone_{digest.hexdigest()[:16]}"


def edit_human_content(instruction: str, audio_tokens: str) -> str:
    """The human turn's content of an edit request: the instruction, then the input audio."""
    return f"{instruction}\n{audio_tokens.strip()}\n"


def edit_conversation(instruction: str, audio_tokens: str) -> list[dict[str, str]]:
    """An edit request as chat messages (what `edit_prompt_ids` frames in ids), in the
    role/content form that chat templates and trainers read; the `user` message is the
    model's `human` turn."""
    return [
        {"role": "system", "content": EDIT_SYSTEM_PROMPT},
        {"role": "user", "content": edit_human_content(instruction, audio_tokens)},
    ]


def edit_prompt_ids(encode: Encode, instruction: str, audio_tokens: str) -> list[int]:
    """Token ids of an edit request: system turn, human turn, opened assistant turn."""
    ids = [BOS_ID, BOT_ID, *encode("system\n" + EDIT_SYSTEM_PROMPT), EOT_ID]
    content = edit_human_content(instruction, audio_tokens)
    ids += [BOT_ID, *encode("human\n"), *encode(content), EOT_ID]
    ids += [BOT_ID, *encode("assistant\n")]
    return ids


def clone_prompt_ids(
    encode: Encode, speaker: str, prompt_text: str, prompt_audio_tokens: str, target_text: str
) -> list[int]:
    """Token ids of a zero-shot clone request."""
    system = clone_system_prompt(speaker, prompt_text, prompt_audio_tokens)
    ids = [BOS_ID, BOT_ID, *encode("system\n" + system), EOT_ID]
    newline = list(encode("\n"))
    target = list(encode("\n" + target_text))[len(newline) :]
    ids += [BOT_ID, *encode("human\n"), *target, EOT_ID]
    ids += [BOT_ID, *encode("assistant\n")]
    return ids


def request_ids(
    encode: Encode,
    spec: EditSpec,
    text: str | None,
    target_text: str | None,
    codes: Sequence[int],
    speaker: str | None = None,
) -> list[int]:
    """The complete ids the LLM receives for one request, as the engine frames them.

    `codes` are the clip's interleaved dual-codebook codes (0..5119, whole 2+3 groups); for
    `clone` they are the voice prompt's, `text` is the prompt's transcript, `target_text` what
    to say and `speaker` the speaker name (`clone_speaker_name` derives it from the prompt).
    Raises ValueError (tokens.TokenError for bad codes) naming what is wrong.
    """
    tokens.validate_codes(codes)
    instruction = instruction_text(spec, text, target_text)
    audio = tokens.to_text(codes)
    if spec.type == "clone":
        if not _clean(speaker):
            raise ValueError("edit clone needs the speaker name of the voice prompt")
        return clone_prompt_ids(encode, _clean(speaker), _clean(text), audio, instruction)
    if _clean(speaker):
        raise ValueError(f"a speaker name applies only to clone, not to {spec}")
    return edit_prompt_ids(encode, instruction, audio)


def prompt_preview(
    spec: EditSpec,
    text: str | None,
    target_text: str | None = None,
    audio_placeholder: str = "<audio tokens of the input clip>",
) -> str:
    """The whole conversation the model reads, as text, with the audio tokens left out.

    Meant for display (`stepedit prompt`): turns are shown as `<|BOT|>role` ... `<|EOT|>`.
    """
    instruction = instruction_text(spec, text, target_text)
    if spec.type == "clone":
        system = clone_system_prompt(
            "clone_<hash of prompt text and audio>",
            _require_text(spec, text),
            "<audio tokens of the prompt clip>",
        )
        human = instruction
    else:
        system = EDIT_SYSTEM_PROMPT
        human = f"{instruction}\n{audio_placeholder}\n"
    return f"<|BOT|>system\n{system}<|EOT|><|BOT|>human\n{human}<|EOT|><|BOT|>assistant\n"
