"""Golden LLM input ids of Step-Audio-EditX requests, as the reference stack computes them.

Write the goldens (in an environment with the reference transformers, nothing else of the
project is needed):

    python -m venv /tmp/tf453
    /tmp/tf453/bin/pip install transformers==4.53.3 sentencepiece tokenizers protobuf
    /tmp/tf453/bin/python tests/goldens/make_tokenizer_goldens.py write

It builds the synthetic tokenizer folders of `tests/tokenizer_folders.py`, loads each with
`AutoTokenizer.from_pretrained` exactly as the release loads its model folder, frames every
request the way the release's edit and clone calls do (one `tokenizer.encode` per role, per
turn content, and for a clone the target text, as given, as the continuation of a newline) and
writes
`tests/goldens/tokenizer_ids.json`. The instruction texts, system prompts and the `<audio_N>`
text form are read from the project's `prompts.py` / `tokens.py` (tested on their own against the
published texts); the framing around them is written out here, independently of the project.

Count how many golden sequences another way of encoding reproduces (in the project's
environment):

    python tests/goldens/make_tokenizer_goldens.py compare
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
GOLDENS = HERE / "tokenizer_ids.json"
BOS, EOT, BOT = 1, 3, 4

sys.path.insert(0, str(HERE.parent))
import tokenizer_folders  # noqa: E402


def _project_texts() -> tuple[types.ModuleType, types.ModuleType, types.ModuleType]:
    """prompts, tokens and edits of the project, without running the engine package's
    `__init__` files (they import the audio stack, absent from the reference environment)."""
    sys.path.insert(0, str(REPO))
    for name in ("stepedit_core.engines", "stepedit_core.engines.stepaudio"):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(REPO / name.replace(".", "/"))]
            sys.modules[name] = package
    from stepedit_core.engines.stepaudio import prompts, tokens
    from stepedit_core.foundation import edits

    return prompts, tokens, edits


def _codes(seed: int, groups: int) -> list[int]:
    """Deterministic codes in 2+3 order (vq02 0..1023, then vq06 1024..5119)."""
    state, codes = seed, []
    for _ in range(groups):
        for slot in range(5):
            state = (state * 1103515245 + 12345) % (1 << 31)
            codes.append(state % 1024 if slot < 2 else 1024 + state % 4096)
    return codes


CASES = [
    # id, edit, text, target_text, speaker
    ("en_emotion", "emotion=happy", "Hello world, this is a short test.", None, None),
    ("zh_emotion", "emotion=remove", "今天天气很好，我们一起去公园散步吧。", None, None),
    ("en_style", "style=whisper", "Please read the next line slowly.", None, None),
    ("zh_style", "style=remove", "他笑着说：你好，欢迎来到我们的节目。", None, None),
    ("en_speed", "speed=faster", "The quick brown fox jumps over the lazy dog.", None, None),
    ("zh_speed", "speed=more slower", "明天早上八点开会，请大家准时参加。", None, None),
    (
        "en_paralinguistic",
        "paralinguistic",
        "good morning, thank you",
        "[Laughter] good morning, [Sigh] thank you",
        None,
    ),
    ("zh_paralinguistic", "paralinguistic", "今天天气很好", "今天[Sigh]天气很好[Laughter]", None),
    ("en_denoise", "denoise", "Speech editing at catalog scale.", None, None),
    ("zh_denoise", "denoise", "这段录音里有一些噪音。", None, None),
    ("en_vad", "vad", "Speech editing at catalog scale.", None, None),
    ("zh_vad", "vad", "我们的目标是让每一段语音都清晰自然。", None, None),
    (
        "en_clone",
        "clone",
        "The quick brown fox jumps over the lazy dog.",
        "Speech editing at catalog scale, one line at a time.",
        "clone_0123456789abcdef",
    ),
    (
        "zh_clone",
        "clone",
        "请把这段音频变得更加开心一些。",
        "明天早上八点开会，请大家准时参加。",
        "clone_fedcba9876543210",
    ),
    # a dialect tag and the text's own spacing reach the model as given
    (
        "zh_clone_dialect",
        "clone",
        "请把这段音频变得更加开心一些。",
        "[Sichuanese]明天早上八点开会，  请大家准时参加。 ",
        "clone_0011223344556677",
    ),
]


# Single `encode()` calls on text that stresses the pipeline: spaces and tabs, text around
# special and audio tokens, literal special-token strings, full-width and rare characters.
TEXTS = [
    "",
    " ",
    "\n",
    "  two leading spaces",
    "trailing spaces  ",
    "a  b   c\td",
    "<audio_0><audio_5119>\n",
    "x<audio_1024> y",
    "<s>hello</s> <unk> <pad>",
    "<|BOT|>human\n<|EOT|>",
    "Ｈｅｌｌｏ　１２３，world！",
    "emoji 😀 and é ß Ω",
    "▁already▁marked",
    "<0x0A> is not a newline",
    "[Laughter] ha [Sigh]\n\n",
    "今天 天气\t很好\n",
    # around added tokens whose flags differ in some folders (normalized, strip, single word)
    "<audio_7>\nnext",
    "<audio_0>\n<audio_1>\n",
    "x <audio_1024> y",
    "a<audio_3>b <audio_4>",
    " <|EOT|> spaced <|BOT|> ",
    "<s> hello </s>",
    "<|NEW|> new token <pad>",
]


def case_records() -> list[dict]:
    return [
        {
            "id": case_id,
            "edit": edit,
            "text": text,
            "target_text": target,
            "speaker": speaker,
            "codes": _codes(index + 1, 4),
        }
        for index, (case_id, edit, text, target, speaker) in enumerate(CASES)
    ]


def reference_ids(encode, case: dict, prompts, tokens, edits) -> tuple[list[int], str]:
    """The release's framing, written out: BOS; system turn; human turn; opened answer."""
    spec = edits.parse_edit(case["edit"])
    text, target = case["text"].strip(), case["target_text"] or ""
    audio = tokens.to_text(case["codes"])
    if spec.type == "clone":
        system = prompts.clone_system_prompt(case["speaker"], text, audio)
        newline = encode("\n")
        human = encode("\n" + target)[len(newline) :]
        human_text = target
    else:
        system = prompts.EDIT_SYSTEM_PROMPT
        target = target.strip()
        human_text = prompts.instruction_text(spec, text, target or None)
        human = encode(human_text + "\n" + audio + "\n")
    ids = [BOS, BOT] + encode("system\n" + system) + [EOT]
    ids += [BOT] + encode("human\n") + human + [EOT]
    ids += [BOT] + encode("assistant\n")
    return ids, human_text


def write(root: Path) -> None:
    import sentencepiece
    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()
    prompts, tokens, edits = _project_texts()
    cases = case_records()
    folders = tokenizer_folders.build_all(root)
    out: dict = {
        "reference": {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": sentencepiece.__version__,
            "loaded_with": "AutoTokenizer.from_pretrained(folder, trust_remote_code=True, "
            "local_files_only=True)",
        },
        "folders": {},
        "cases": cases,
        "texts": {},
        "ids": {},
    }
    for name, folder in folders.items():
        tokenizer = AutoTokenizer.from_pretrained(
            folder, trust_remote_code=True, local_files_only=True
        )
        out["folders"][name] = {
            "digest": tokenizer_folders.folder_digest(folder),
            "tokenizer_class": type(tokenizer).__name__,
        }
        out["ids"][name] = {}
        out["texts"][name] = [list(tokenizer.encode(text)) for text in TEXTS]
        for case in cases:
            ids, human = reference_ids(
                lambda t, tok=tokenizer: list(tok.encode(t)), case, prompts, tokens, edits
            )
            case["human_text"] = human
            out["ids"][name][case["id"]] = ids
    out["text_inputs"] = TEXTS
    lines = json.dumps(out, ensure_ascii=False, indent=1)
    GOLDENS.write_text(_compact_lists(lines) + "\n", encoding="utf-8")
    total = sum(len(v) for v in out["ids"].values())
    print(f"wrote {total} sequences over {len(folders)} folders to {GOLDENS}")


def _compact_lists(text: str) -> str:
    """One line per list of ints, so the file stays small and diffs stay readable."""

    def one_line(match: re.Match) -> str:
        return "[" + ", ".join(re.findall(r"\d+", match.group(0))) + "]"

    return re.sub(r"\[[\d,\s]*\]", one_line, text)


def compare(root: Path) -> None:
    """How many golden sequences plain AutoTokenizer and text_tokenizer reproduce here."""
    import transformers
    from transformers import AutoTokenizer

    from stepedit_core.engines.stepaudio import prompts
    from stepedit_core.engines.stepaudio.text_tokenizer import load_text_tokenizer

    transformers.logging.set_verbosity_error()
    from stepedit_core.foundation import edits

    goldens = json.loads(GOLDENS.read_text(encoding="utf-8"))
    folders = tokenizer_folders.build_all(root)
    counts = {"AutoTokenizer": 0, "text_tokenizer": 0}
    text_counts = {"AutoTokenizer": 0, "text_tokenizer": 0}
    total = 0
    for name, folder in folders.items():
        plain = AutoTokenizer.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
        ours = load_text_tokenizer(folder)
        for text, expected in zip(goldens["text_inputs"], goldens["texts"][name], strict=True):
            text_counts["AutoTokenizer"] += list(plain.encode(text)) == expected
            text_counts["text_tokenizer"] += ours.encode(text) == expected
        for case in goldens["cases"]:
            expected = goldens["ids"][name][case["id"]]
            total += 1
            spec = edits.parse_edit(case["edit"])
            for label, encode in (
                ("AutoTokenizer", lambda t, tok=plain: list(tok.encode(t))),
                ("text_tokenizer", ours.encode),
            ):
                got = prompts.request_ids(
                    encode, spec, case["text"], case["target_text"], case["codes"], case["speaker"]
                )
                counts[label] += got == expected
    print(
        json.dumps(
            {
                "transformers": transformers.__version__,
                "prompt_sequences": total,
                "matching_prompts": counts,
                "encode_calls": len(goldens["text_inputs"]) * len(folders),
                "matching_encode_calls": text_counts,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("write", "compare"))
    parser.add_argument("--workdir", default=None, help="where to build the folders (temp dir)")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        (write if args.mode == "write" else compare)(root)


if __name__ == "__main__":
    main()
