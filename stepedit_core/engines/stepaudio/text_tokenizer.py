"""Text ids for the Step-Audio-EditX LLM, the same whatever transformers version is installed.

The model was trained and is served with the ids of transformers 4.53.3's `AutoTokenizer`,
which for the model folder is a Llama *fast* tokenizer. Later transformers releases changed that
tokenizer (no BOS unless the folder asks for it, no `▁` after special tokens, unigram
sentencepiece models converted to BPE), so a prompt encoded through the installed transformers
can differ from the one the model expects. This module builds the fast tokenizer itself with the
`tokenizers` library and reproduces the reference behaviour:

- `tokenizer_config.json` decides the framing, with the reference defaults when a key is absent:
  `add_bos_token` true (every `encode()` starts with BOS), `add_eos_token` false, `legacy` true
  (`▁` is prepended to every stretch of text between special tokens), `add_prefix_space` true.
- `tokenizer.json`, when the folder has one, is the tokenizer (its post-processor replaced by the
  BOS/EOS template above), unless `add_prefix_space` or `from_slow` is set in the config, which
  makes the reference rebuild it from `tokenizer.model`.
- Otherwise `tokenizer.model` is read as a sentencepiece proto and turned into the same
  algorithm: a unigram model stays a unigram model (never re-segmented as BPE), a BPE model gets
  merges ranked by the score of the piece they produce. Control pieces become special added
  tokens, user-defined pieces (`<audio_N>`) plain added tokens, both matched before any
  normalisation; bytes fall back to the `<0xNN>` pieces; the first three pieces enter with score
  0 and unknown text maps to id 0, as in the reference conversion.
- The `added_tokens_decoder` entries and special tokens of `tokenizer_config.json` are then
  applied as the reference applies them (`added_tokens`): an entry for a piece the
  sentencepiece model already defines is added again when its flags differ, and its flags
  (`lstrip`, `rstrip`, `single_word`, `normalized`, `special`) then change how text splits.

Only `tokenizers`, `sentencepiece`'s bundled protobuf module and the standard library are used:
no transformers, no torch, so `stepedit prompt --ids` works without the model's weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepedit_core.engines.stepaudio import added_tokens

REFERENCE_TRANSFORMERS = "4.53.3"
_SPIECE_SPACE = "\u2581"
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
# sentencepiece piece types (sentencepiece_model.proto)
_CONTROL, _USER_DEFINED = 3, 4
_UNIGRAM, _BPE = 1, 2


class TextTokenizerError(ValueError):
    """A model folder whose text tokenizer can not be reproduced."""


# the reference's special-token attributes, in its order
_SPECIAL_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value


@dataclass(frozen=True)
class TokenizerSettings:
    """What `tokenizer_config.json` says, with the reference defaults for absent keys."""

    add_bos_token: bool = True
    add_eos_token: bool = False
    legacy: bool = True
    add_prefix_space: bool | None = None  # None: absent (a prefix space is added)
    from_slow: bool = False
    bos_token: str | None = "<s>"
    eos_token: str | None = "</s>"
    unk_token: str | None = "<unk>"
    pad_token: str | None = None
    additional_special_tokens: tuple[str, ...] = ()
    added_tokens: tuple[dict, ...] = ()  # `added_tokens_decoder` entries, in id order
    # every special token as the config writes it (a string or an AddedToken dict), in the
    # reference's attribute order; None: the named fields above
    special_values: tuple[str | dict, ...] | None = None

    @property
    def rebuild_from_model(self) -> bool:
        """The reference ignores tokenizer.json and converts tokenizer.model."""
        return self.from_slow or self.add_prefix_space is not None

    @property
    def special_tokens(self) -> list[str]:
        """The special tokens' texts, deduplicated, in the reference's order."""
        texts = [_token_text(v) for v in self.special_values_or_defaults]
        return list(dict.fromkeys(t for t in texts if t))

    @property
    def special_values_or_defaults(self) -> tuple[str | dict, ...]:
        if self.special_values is not None:
            return self.special_values
        named = [self.bos_token, self.eos_token, self.unk_token, self.pad_token]
        return tuple(t for t in named if t) + self.additional_special_tokens


def read_settings(folder: str | Path) -> TokenizerSettings:
    """Read `folder/tokenizer_config.json` (absent file: all defaults)."""
    path = Path(folder) / "tokenizer_config.json"
    config: dict = {}
    if path.is_file():
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise TextTokenizerError(f"{path} is not valid JSON: {exc}") from None
    cls = config.get("tokenizer_class")
    if cls is not None and cls not in _LLAMA_CLASSES:
        raise TextTokenizerError(
            f"{path}: tokenizer_class {cls!r} is not reproduced; only the Llama sentencepiece "
            f"tokenizer of the Step-Audio-EditX release ({', '.join(_LLAMA_CLASSES)}) is"
        )
    defaults = TokenizerSettings()

    def flag(key: str, default: bool) -> bool:
        value = config.get(key)
        return default if value is None else bool(value)

    def token(key: str, default: str | None) -> str | None:
        return _token_text(config[key]) if key in config else default

    decoder = config.get("added_tokens_decoder") or {}
    added = tuple(dict(entry, id=int(i)) for i, entry in sorted(decoder.items(), key=_int_key))
    for entry in added:
        if not isinstance(entry.get("content"), str):
            raise TextTokenizerError(
                f"{path}: added_tokens_decoder entry {entry['id']} has no 'content' string"
            )
    prefix = config.get("add_prefix_space")
    llama_defaults = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    special_values: list[str | dict] = []
    for key in _SPECIAL_KEYS:
        value = config[key] if key in config else llama_defaults.get(key)
        if value is not None:
            special_values.append(value)
    special_values += [v for v in config.get("additional_special_tokens") or [] if v]
    return TokenizerSettings(
        add_bos_token=flag("add_bos_token", defaults.add_bos_token),
        add_eos_token=flag("add_eos_token", defaults.add_eos_token),
        legacy=flag("legacy", defaults.legacy),
        add_prefix_space=None if prefix is None else bool(prefix),
        from_slow=flag("from_slow", False),
        bos_token=token("bos_token", defaults.bos_token),
        eos_token=token("eos_token", defaults.eos_token),
        unk_token=token("unk_token", defaults.unk_token),
        pad_token=token("pad_token", defaults.pad_token),
        additional_special_tokens=tuple(
            t for t in (_token_text(v) for v in config.get("additional_special_tokens") or []) if t
        ),
        added_tokens=added,
        special_values=tuple(special_values),
    )


def _int_key(item: tuple[str, Any]) -> int:
    return int(item[0])


def _load_proto(path: Path) -> Any:
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except DecodeError as exc:
        raise TextTokenizerError(f"{path} is not a sentencepiece model: {exc}") from None
    return proto


def bpe_merges(pieces: Sequence[tuple[str, float]]) -> list[tuple[str, str]]:
    """Merges of a sentencepiece BPE vocabulary: every way of writing a piece as two pieces.

    sentencepiece merges the adjacent pair whose joined piece scores highest, so merges are
    ranked by that score (highest first). Ties, which only occur among zero-score pieces,
    are broken the way the reference conversion breaks them: longer left part first, then
    longer right part, then the joined piece's id, then the parts' ids.
    """
    ids = {piece: index for index, (piece, _) in enumerate(pieces)}
    ranked: list[tuple[tuple, tuple[str, str]]] = []
    for index, (piece, score) in enumerate(pieces):
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in ids and right in ids:
                key = (-score, -len(left), -len(right), index, ids[left], ids[right])
                ranked.append((key, (left, right)))
    ranked.sort(key=lambda entry: entry[0])
    return [pair for _, pair in ranked]


def _model_from_proto(proto: Any) -> Any:
    from tokenizers import models

    # The first three pieces enter with score 0, as the reference conversion gives them.
    vocab = [(p.piece, 0.0 if i < 3 else float(p.score)) for i, p in enumerate(proto.pieces)]
    kind = proto.trainer_spec.model_type
    if kind == _UNIGRAM:
        return models.Unigram(vocab, unk_id=0, byte_fallback=True)
    if kind == _BPE:
        return models.BPE(
            {piece: i for i, (piece, _) in enumerate(vocab)},
            bpe_merges(vocab),
            unk_token=proto.trainer_spec.unk_piece,
            fuse_unk=True,
            byte_fallback=True,
        )
    raise TextTokenizerError(
        f"sentencepiece model type {kind} is not supported (only unigram and BPE)"
    )


def build_from_sentencepiece(model_path: str | Path, settings: TokenizerSettings) -> Any:
    """The fast tokenizer the reference builds from `tokenizer.model` (no post-processor)."""
    from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers

    proto = _load_proto(Path(model_path))
    backend = Tokenizer(_model_from_proto(proto))
    prefix = settings.add_prefix_space is not False
    if settings.legacy:
        # Every stretch of text between added tokens is normalised on its own, so each one
        # gets a leading `▁`, also right after `<audio_N>` or a control token.
        steps = [normalizers.Prepend(_SPIECE_SPACE)] if prefix else []
        steps.append(normalizers.Replace(" ", _SPIECE_SPACE))
        backend.normalizer = normalizers.Sequence(steps)
    else:
        backend.pre_tokenizer = pre_tokenizers.Metaspace(
            replacement=_SPIECE_SPACE, prepend_scheme="first" if prefix else "never", split=False
        )
    backend.add_tokens(
        [
            AddedToken(p.piece, normalized=False, special=p.type == _CONTROL)
            for p in proto.pieces
            if p.type in (_CONTROL, _USER_DEFINED)
        ]
    )
    return backend


def _set_template(backend: Any, settings: TokenizerSettings) -> None:
    """BOS/EOS around every encoded text, as `add_bos_token` / `add_eos_token` ask."""
    from tokenizers import processors

    def token_id(token: str | None, flag: str) -> tuple[str, int]:
        if token is None:
            raise TextTokenizerError(f"{flag} is true but the folder names no such token")
        found = backend.token_to_id(token)
        if found is None and settings.unk_token is not None:
            found = backend.token_to_id(settings.unk_token)
        if found is None:
            raise TextTokenizerError(f"the tokenizer has no id for {token!r}")
        return token, found

    specials: list[tuple[str, int]] = []
    single = ["$A:0"]
    pair = ["$A:0", "$B:1"]
    if settings.add_bos_token:
        bos = token_id(settings.bos_token, "add_bos_token")
        specials.append(bos)
        single.insert(0, f"{bos[0]}:0")
        pair = [f"{bos[0]}:0", "$A:0", f"{bos[0]}:1", "$B:1"]
    if settings.add_eos_token:
        eos = token_id(settings.eos_token, "add_eos_token")
        specials.append(eos)
        single.append(f"{eos[0]}:0")
        at_a = pair.index("$A:0") + 1
        pair.insert(at_a, f"{eos[0]}:0")
        pair.append(f"{eos[0]}:1")
    backend.post_processor = processors.TemplateProcessing(
        single=" ".join(single), pair=" ".join(pair), special_tokens=specials
    )


class TextTokenizer:
    """`encode(text)` gives the ids the reference `tokenizer.encode(text)` gives."""

    def __init__(self, backend: Any, settings: TokenizerSettings, source: str) -> None:
        self.backend = backend
        self.settings = settings
        self.source = source  # which file the tokenizer was built from, for messages

    def encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=True).ids)

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"TextTokenizer(source={self.source!r}, add_bos_token={s.add_bos_token}, "
            f"legacy={s.legacy})"
        )


def load_text_tokenizer(folder: str | Path) -> TextTokenizer:
    """The LLM's text tokenizer from a model folder (`Step-Audio-EditX/`)."""
    folder = Path(folder)
    settings = read_settings(folder)
    fast_file = folder / "tokenizer.json"
    model_file = folder / "tokenizer.model"
    if fast_file.is_file() and not settings.rebuild_from_model:
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(fast_file))
        except Exception as exc:  # noqa: BLE001 (tokenizers raises plain Exception on bad files)
            raise TextTokenizerError(f"{fast_file} could not be read: {exc}") from None
        source = fast_file.name
    elif model_file.is_file():
        backend = build_from_sentencepiece(model_file, settings)
        source = model_file.name
    else:
        raise TextTokenizerError(f"{folder} has neither tokenizer.json nor tokenizer.model")
    added_tokens.apply(
        backend,
        settings.added_tokens,
        settings.special_values_or_defaults,
        set(settings.special_tokens),
    )
    _set_template(backend, settings)
    return TextTokenizer(backend, settings, source)


def parse_codes(value: str | Sequence[int] | None) -> list[int]:
    """Audio codes from `C1,C2,...` (spaces allowed) or a sequence of ints."""
    if value is None:
        return []
    if not isinstance(value, str):
        return [int(c) for c in value]
    try:
        return [int(part) for part in value.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(
            f"audio codes must be integers separated by commas, got {value[:40]!r}"
        ) from None


def request_ids_report(
    models_dir: str | Path | None,
    spec: Any,
    text: str | None,
    target_text: str | None,
    codes: str | Sequence[int] | None,
    speaker: str | None = None,
) -> dict:
    """What `stepedit prompt --ids` prints: the LLM's complete input ids for one request,
    computed from the tokenizer files in `models_dir/Step-Audio-EditX/` alone.

    Raises ValueError (TextTokenizerError, TokenError) naming what is missing or wrong.
    """
    from stepedit_core.engines.stepaudio import layout, prompts

    if models_dir is None:
        raise ValueError("--ids needs --models DIR (the tokenizer files of Step-Audio-EditX/)")
    tokenizer = load_text_tokenizer(layout.llm_dir(models_dir))
    ids = prompts.request_ids(
        tokenizer.encode, spec, text, target_text, parse_codes(codes), speaker
    )
    return {
        "edit": str(spec),
        "input_ids": ids,
        "n_ids": len(ids),
        "tokenizer": {
            "source": tokenizer.source,
            "add_bos_token": tokenizer.settings.add_bos_token,
            "legacy": tokenizer.settings.legacy,
            "reference_transformers": REFERENCE_TRANSFORMERS,
        },
    }
