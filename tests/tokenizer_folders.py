"""Small synthetic text-tokenizer folders shaped like Step-Audio-EditX's (tests and goldens).

Every folder holds a sentencepiece `tokenizer.model` with the release's id layout: 0 `<pad>`,
1 `<s>`, 2 `</s>`, 3 `<|EOT|>`, 4 `<|BOT|>`, then the trained text pieces, unused fillers up to
65535 and the 5,120 user-defined pieces `<audio_N>` at 65536 + N. The trained part comes from
two tiny base models shipped next to this file (`tokenizer_base/{unigram,bpe}.model`, trained
once by `train_base_models` on the built-in English + Chinese text); the fillers and audio
pieces are appended here in code, so the folders are rebuilt byte for byte without training.

The variants differ in what decides the ids: the sentencepiece algorithm (unigram or BPE), the
`add_bos_token` / `legacy` / `add_prefix_space` keys of `tokenizer_config.json` (present or
absent), whether a `tokenizer.json` sits next to `tokenizer.model`, and the flags of the
config's `added_tokens_decoder` entries for pieces the sentencepiece model already defines
(the same flags as the model's, or `normalized` / `lstrip` / `rstrip` / `single_word` /
`special` set otherwise, or left out). Plain stdlib +
sentencepiece + protobuf, so it runs in the goldens' own environment as well as in the tests.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

BASE_DIR = Path(__file__).parent / "tokenizer_base"
AUDIO_OFFSET = 65536
N_AUDIO = 5120

TRAINING_TEXT = """system
human
assistant
As a highly skilled audio editing and tuning specialist, you excel in interpreting user
instructions and applying precise adjustments to meet their needs.
Make the following audio more happy. The text corresponding to the audio is: hello world
Make the following audio more whisper style. The text corresponding to the audio is: fine
Remove any emotion in the following audio and the reference text is: good morning
Remove any speaking styles in the following audio and the reference text is: thank you
Remove any noise from the given audio while preserving the voice content clearly.
Remove any silent portions from the given audio. Ensure that the speech quality remains intact.
Add some non-verbal sounds to make the audio more natural, the new text is : [Laughter] yes
Generate audio with the following timbre, prosody and speaking style
[speaker_start] speaker name: clone speaker prompt text: speaker audio tokens: [speaker_end]
The quick brown fox jumps over the lazy dog. Speech editing at catalog scale.
Please read the next line slowly, then a little faster, and finish with a sigh.
今天天气很好，我们一起去公园散步吧。
请把这段音频变得更加开心一些，语速稍微快一点。
这段录音里有一些噪音，需要去掉背景里的杂音。
他笑着说：你好，欢迎来到我们的节目。
我们的目标是让每一段语音都清晰自然。
明天早上八点开会，请大家准时参加。
"""


@dataclass(frozen=True)
class FolderSpec:
    """One synthetic folder: algorithm, the config keys that are present, and tokenizer.json."""

    name: str
    model_type: str  # "unigram" or "bpe"
    config: dict = field(default_factory=dict)  # keys added to tokenizer_config.json
    # None: no tokenizer.json; else the Metaspace prepend scheme of the one written
    tokenizer_json: str | None = None


_HEAD = ("<pad>", "<s>", "</s>", "<|EOT|>", "<|BOT|>")  # ids 0..4, control pieces


def _entry(content: str, **flags: bool) -> dict:
    """An `added_tokens_decoder` entry as transformers writes one (every flag present)."""
    entry = {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": False,
    }
    entry.update(flags)
    return entry


def added_tokens_decoder(
    audio: dict | None = None, head: dict | None = None, extra: dict | None = None
) -> dict:
    """`added_tokens_decoder` for the release's id layout: the control pieces 0..4 and `<unk>`
    (special), the 5,120 `<audio_N>` pieces (not special), all with the flags the model's own
    conversion gives them unless `audio` (flags of every audio piece) or `head` (content ->
    flags, or content -> a whole entry dict to write as is) say otherwise; `extra` adds entries
    (id -> entry) for tokens the model lacks."""
    head = head or {}
    decoder = {}
    for index, content in enumerate((*_HEAD, "<unk>")):
        given = head.get(content, {})
        decoder[str(index)] = (
            given if "content" in given else _entry(content, **{"special": True, **given})
        )
    for code in range(N_AUDIO):
        decoder[str(AUDIO_OFFSET + code)] = _entry(f"<audio_{code}>", **(audio or {}))
    decoder.update({str(i): entry for i, entry in (extra or {}).items()})
    return decoder


FOLDERS = (
    FolderSpec("unigram_no_keys", "unigram"),
    FolderSpec("unigram_nobos_legacy", "unigram", {"add_bos_token": False, "legacy": True}),
    FolderSpec("unigram_not_legacy", "unigram", {"legacy": False}),
    FolderSpec("bpe_no_keys", "bpe"),
    FolderSpec("bpe_nobos_not_legacy", "bpe", {"add_bos_token": False, "legacy": False}),
    FolderSpec("unigram_json_no_keys", "unigram", tokenizer_json="first"),
    FolderSpec(
        "unigram_json_nobos_not_legacy",
        "unigram",
        {"add_bos_token": False, "legacy": False},
        tokenizer_json="never",
    ),
    FolderSpec("unigram_json_no_prefix_space", "unigram", {"add_prefix_space": False}, "first"),
    # added_tokens_decoder: the model's own flags (nothing changes), then flags that differ
    FolderSpec(
        "unigram_added_same_flags", "unigram", {"added_tokens_decoder": added_tokens_decoder()}
    ),
    FolderSpec(
        "unigram_added_audio_normalized",
        "unigram",
        {"added_tokens_decoder": added_tokens_decoder(audio={"normalized": True})},
    ),
    FolderSpec(
        "unigram_added_audio_normalized_not_legacy",
        "unigram",
        {"legacy": False, "added_tokens_decoder": added_tokens_decoder(audio={"normalized": True})},
    ),
    FolderSpec(
        "bpe_added_strip_flags",
        "bpe",
        {
            "added_tokens_decoder": added_tokens_decoder(
                audio={"single_word": True},
                head={
                    "<s>": {"rstrip": True},
                    "</s>": {"special": False},
                    "<|EOT|>": {"lstrip": True, "rstrip": True},
                    "<|BOT|>": {"lstrip": True},
                },
                extra={AUDIO_OFFSET + N_AUDIO: _entry("<|NEW|>", normalized=True)},
            )
        },
    ),
    FolderSpec(
        "unigram_json_added_flags",
        "unigram",
        {
            "added_tokens_decoder": added_tokens_decoder(
                audio={"rstrip": True},
                head={
                    "<pad>": {"normalized": True},
                    # flags left out: `normalized` follows `special`
                    "<|BOT|>": {"content": "<|BOT|>", "special": False},
                },
            )
        },
        tokenizer_json="first",
    ),
)


def train_base_models(out_dir: Path = BASE_DIR) -> None:
    """Train the two small base models (only when regenerating the shipped ones)."""
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    for model_type in ("unigram", "bpe"):
        buffer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(TRAINING_TEXT.splitlines() * 20),
            model_writer=buffer,
            vocab_size=700,
            hard_vocab_limit=False,
            model_type=model_type,
            pad_id=0,
            bos_id=1,
            eos_id=2,
            unk_id=5,
            control_symbols=["<|EOT|>", "<|BOT|>"],
            byte_fallback=True,
            character_coverage=1.0,
            num_threads=1,
            minloglevel=2,
        )
        (out_dir / f"{model_type}.model").write_bytes(buffer.getvalue())


def _extended_proto(model_type: str):
    """The base model with fillers up to 65535 and `<audio_N>` at 65536 + N."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString((BASE_DIR / f"{model_type}.model").read_bytes())
    kind = model_pb2.ModelProto.SentencePiece
    for i in range(len(proto.pieces), AUDIO_OFFSET):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = f"<unused_{i}>", 0.0, kind.UNUSED
    for code in range(N_AUDIO):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = f"<audio_{code}>", 0.0, kind.USER_DEFINED
    return proto


def _tokenizer_json(proto, prepend_scheme: str) -> dict:
    """A tokenizer.json that holds the unigram model with a pipeline of its own (a Metaspace
    pre-tokenizer with the given prepend scheme, no BOS in its post-processor), so that ids
    read through it differ from ids of a conversion of `tokenizer.model` under the same keys."""
    metaspace = {
        "type": "Metaspace",
        "replacement": "▁",
        "prepend_scheme": prepend_scheme,
        "split": False,
    }
    added = []
    for index, piece in enumerate(proto.pieces):
        if piece.type in (3, 4):  # control, user-defined
            added.append(
                {
                    "id": index,
                    "content": piece.piece,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": piece.type == 3,
                }
            )
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": metaspace,
        "post_processor": None,
        "decoder": metaspace,
        "model": {
            "type": "Unigram",
            "unk_id": proto.trainer_spec.unk_id,
            "vocab": [[p.piece, p.score] for p in proto.pieces],
            "byte_fallback": True,
        },
    }


def build_folder(spec: FolderSpec, root: Path) -> Path:
    """Write the folder `root/spec.name` and return its path."""
    folder = root / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    proto = _extended_proto(spec.model_type)
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        **spec.config,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if spec.tokenizer_json:
        text = json.dumps(_tokenizer_json(proto, spec.tokenizer_json), ensure_ascii=False)
        (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    return folder


def folder_digest(folder: Path) -> str:
    """sha256 over the folder's files (names and bytes), to tell that a rebuild is identical."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_all(root: Path) -> dict[str, Path]:
    return {spec.name: build_folder(spec, root) for spec in FOLDERS}
