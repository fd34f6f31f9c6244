"""Tiny stand-ins for the Step-Audio-EditX model folders and the upstream checkout (tests only).

`make_standin_models(root)` writes

- `root/models/`: every file of the published layout. `Step-Audio-EditX/` holds a real, tiny
  causal LM loaded through the real path (`AutoModelForCausalLM` with trust_remote_code from
  `modeling_step1.py`, safetensors shards with an index) and a real sentencepiece
  `tokenizer.model` in which `<audio_N>` is id 65536 + N, like the release's. The LM mimics the
  shipped Step1 code where it matters to us: ALiBi (square-root distance) attention that ignores
  the attention mask it is given, GQA, no position ids, a list-style `_tied_weights_keys`, and no
  `tie_word_embeddings` in config.json. On top of its random weights it follows a few rules so
  that its output is well-formed (`behavior="audio"`: 2 vq02 + 3 vq06 per group, EOS after about
  as many codes as the prompt's audio) or deliberately broken ("text", "odd", "silent",
  "endless") for failure tests.
- `root/stepaudio-src/`: a small package with the upstream module names and interfaces
  (`tokenizer.StepAudioTokenizer`, `model_loader.ModelSource`,
  `stepvocoder.cosyvoice2.cli.{cosyvoice,frontend}`), deterministic and numpy/torch only. Like
  upstream, its tokenizer asserts an input rate >= 16 kHz and its decoder takes one clip per call.

So `--models root/models --stepaudio-src root/stepaudio-src` runs the engine's real loading path
with no injection. The LM and tokenizer are built once per process and copied.
"""

from __future__ import annotations

import atexit
import io
import json
import shutil
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from stepedit_core.engines.stepaudio.layout import PARAFORMER_FILES

LAYOUT_TOKENIZER = "Step-Audio-Tokenizer"
LAYOUT_EDITX = "Step-Audio-EditX"
PARAFORMER = "dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-16k-vocab8501-online"
VOCAB = 65536 + 5120
BEHAVIORS = ("audio", "text", "odd", "silent", "endless", "free")

CONFIGURATION_STEP1 = '''
"""Stand-in Step1 configuration (tests only)."""
from transformers import PretrainedConfig


class Step1Config(PretrainedConfig):
    model_type = "step1"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 num_attention_groups=2, num_hidden_layers=2, max_seq_len=8192,
                 vocab_size=70656, rms_norm_eps=1e-5, initializer_range=0.2,
                 standin_behavior="audio", bos_token_id=1, eos_token_id=3, pad_token_id=0,
                 **kwargs):
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_attention_heads = num_attention_heads
        self.num_attention_groups = num_attention_groups
        self.num_hidden_layers = num_hidden_layers
        self.max_seq_len = max_seq_len
        self.vocab_size = vocab_size
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.standin_behavior = standin_behavior
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id,
                         pad_token_id=pad_token_id, **kwargs)
'''

MODELING_STEP1 = '''
"""Stand-in Step1 model (tests only): ALiBi attention that ignores attention_mask, like the
shipped code, plus output rules that make random weights produce well-formed (or, on purpose,
broken) audio token sequences."""
import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_step1 import Step1Config

AUDIO0, VQ02, NCODES, EOS, BOT = 65536, 1024, 5120, 3, 4


class StandinCache(DynamicCache):
    """The KV cache plus the ids seen so far (the output rules read them); keeps both in step
    when a generation loop drops finished rows from the batch."""

    standin_history = None

    def batch_select_indices(self, indices):
        super().batch_select_indices(indices)
        if self.standin_history is not None:
            self.standin_history = self.standin_history[indices]


def _slopes(n):
    p = 2 ** math.floor(math.log2(n))
    s = [(2.0 ** (-8.0 / p)) ** (i + 1) for i in range(p)]
    s += [(2.0 ** (-4.0 / p)) ** (2 * i + 1) for i in range(n - p)]
    return torch.tensor(s, dtype=torch.float32)


class StepRMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        scale = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return x * scale.to(x.dtype) * self.weight


class StepAttention(nn.Module):
    def __init__(self, hidden_size, num_heads, num_groups, layer_idx):
        super().__init__()
        self.hidden_size, self.num_heads, self.num_groups = hidden_size, num_heads, num_groups
        self.head_dim = hidden_size // num_heads
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, num_groups * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, num_groups * self.head_dim, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, x, past_key_value=None, attention_mask=None, cache_position=None):
        # Like the shipped code: `attention_mask` is not used; a plain causal ALiBi bias is built.
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.num_groups, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.num_groups, self.head_dim).transpose(1, 2)
        if past_key_value is not None:
            k, v = past_key_value.update(k, v, self.layer_idx)
        rep = self.num_heads // self.num_groups
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        n = k.shape[2]
        rows = torch.arange(n - s, n)[:, None]
        cols = torch.arange(n)[None, :]
        dist = rows - cols
        bias = -torch.sqrt(dist.clamp(min=0).float())[None] * _slopes(self.num_heads)[:, None, None]
        bias = bias.masked_fill(dist[None] < 0, float("-inf")).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1)), None


class StepMLP(nn.Module):
    def __init__(self, hidden, inner):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class StepLayer(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.self_attn = StepAttention(config.hidden_size, config.num_attention_heads,
                                       config.num_attention_groups, layer_idx)
        self.mlp = StepMLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = StepRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = StepRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden, attention_mask=None, past_key_value=None, cache_position=None):
        attn, _ = self.self_attn(self.input_layernorm(hidden), past_key_value, attention_mask,
                                 cache_position)
        hidden = hidden + attn
        return (hidden + self.mlp(self.post_attention_layernorm(hidden)),)


class StepPreTrainedModel(PreTrainedModel):
    config_class = Step1Config
    base_model_prefix = "model"
    _no_split_modules = ["StepLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(mean=0.0, std=std)
        elif isinstance(module, StepRMSNorm):
            module.weight.data.fill_(1.0)


class Step1Model(StepPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(StepLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = StepRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None,
                cache_position=None):
        hidden = self.embed_tokens(input_ids)
        if use_cache and past_key_values is None:
            past_key_values = StandinCache()
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=attention_mask, past_key_value=past_key_values,
                           cache_position=cache_position)[0]
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden),
                                       past_key_values=past_key_values)


class Step1ForCausalLM(StepPreTrainedModel, GenerationMixin):
    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config):
        super().__init__(config)
        self.model = Step1Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                past_key_values=None, inputs_embeds=None, labels=None, use_cache=None,
                output_attentions=None, output_hidden_states=None, return_dict=None,
                cache_position=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         past_key_values=past_key_values, use_cache=use_cache,
                         cache_position=cache_position)
        logits = self.lm_head(out.last_hidden_state).float()
        cache = out.past_key_values
        if cache is not None:
            previous = getattr(cache, "standin_history", None)
            history = input_ids if previous is None else torch.cat([previous, input_ids], 1)
            cache.standin_history = history
            logits[:, -1] = self._rules(logits[:, -1], history)
        return CausalLMOutputWithPast(logits=logits, past_key_values=cache)

    def _rules(self, scores, history):
        mode = self.config.standin_behavior
        if mode == "free":
            return scores
        audio = (history >= AUDIO0) & (history < AUDIO0 + NCODES)
        trailing = audio.flip(-1).long().cumprod(-1).sum(-1)
        in_prompt = audio.sum(-1) - trailing
        ids = torch.arange(scores.shape[-1])
        out = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            t = int(trailing[row])
            if mode == "silent":
                out[row, EOS] = 0.0
                continue
            if mode == "text":
                after_bot = int((history[row] == BOT).flip(-1).long().argmax())
                if after_bot >= 12:
                    out[row, EOS] = 0.0
                else:
                    keep = (ids >= 300) & (ids < 330)
                    out[row, keep] = scores[row, keep]
                continue
            target = max(10, min(400, 5 * round(int(in_prompt[row]) / 5)))
            if mode == "odd":
                target = 10
            if mode != "endless" and t >= target:
                out[row, EOS] = 0.0
                continue
            lo, hi = (AUDIO0, AUDIO0 + VQ02) if t % 5 < 2 else (AUDIO0 + VQ02, AUDIO0 + NCODES)
            if mode == "odd" and t == 5:  # a vq06 code where the second group's vq02 belongs
                lo, hi = AUDIO0 + VQ02, AUDIO0 + NCODES
            out[row, lo:hi] = scores[row, lo:hi]
        return out
'''

UPSTREAM_MODEL_LOADER = '''
"""Stand-in of the upstream model_loader module (tests only)."""


class ModelSource:
    MODELSCOPE = "modelscope"
    HUGGINGFACE = "huggingface"
    LOCAL = "local"
    AUTO = "auto"
'''

UPSTREAM_TOKENIZER = '''
"""Stand-in of the upstream StepAudioTokenizer (tests only): deterministic codes from frame
energy and zero crossings, at the real rates (vq02 16.7 Hz, vq06 25 Hz)."""
import os

import numpy as np
import torch

from model_loader import ModelSource


def _resample(x, rate, new_rate):
    n = int(round(len(x) * new_rate / rate))
    return np.interp(np.arange(n) * rate / new_rate, np.arange(len(x)), x)


def _code(frame, size, salt):
    energy = float(np.sqrt(np.mean(frame ** 2)))
    crossings = float(np.mean(np.abs(np.diff(np.sign(frame))))) / 2
    return int(energy * 1000 * salt + crossings * 977) % size


class StepAudioTokenizer:
    instances = 0

    def __init__(self, encoder_path, model_source=ModelSource.AUTO,
                 funasr_model_id=("dengcunqin/speech_paraformer-large_asr_nat-zh-cantonese-en-"
                                  "16k-vocab8501-online")):
        assert model_source == ModelSource.LOCAL, model_source
        assert os.path.isdir(os.path.join(encoder_path, funasr_model_id))
        self.kms = np.load(os.path.join(encoder_path, "linguistic_tokenizer.npy"))
        assert os.path.exists(os.path.join(encoder_path, "speech_tokenizer_v1.onnx"))
        StepAudioTokenizer.instances += 1
        self.calls = 0

    def wav2token(self, audio, sample_rate, enable_trim=True, energy_norm=True):
        assert isinstance(audio, torch.Tensor) and audio.dim() == 2 and audio.shape[0] == 1
        x = audio[0].double().numpy()
        if sample_rate != 16000:
            assert sample_rate > 16000, f"wav sample rate {sample_rate} must be greater than 16000"
            x = _resample(x, sample_rate, 16000)
        if energy_norm:
            x = x / max(float(np.max(np.abs(x))), 0.01) * 0.999
        self.calls += 1
        vq02 = [_code(x[i:i + 960], 1024, 7) for i in range(0, len(x) - 959, 960)]
        vq06 = [_code(x[i:i + 640], 4096, 13) for i in range(0, len(x) - 639, 640)]
        ids = []
        for g in range(min(len(vq02) // 2, len(vq06) // 3)):
            ids += [65536 + c for c in vq02[2 * g:2 * g + 2]]
            ids += [65536 + 1024 + c for c in vq06[3 * g:3 * g + 3]]
        return ids, vq02, vq06
'''

UPSTREAM_FRONTEND = '''
"""Stand-in of the upstream CosyVoiceFrontEnd (tests only)."""
import os

import numpy as np
import torch


def _resample(x, rate, new_rate):
    n = int(round(len(x) * new_rate / rate))
    return np.interp(np.arange(n) * rate / new_rate, np.arange(len(x)), x)


class CosyVoiceFrontEnd:
    def __init__(self, mel_conf, campplus_model, speech_tokenizer_model,
                 onnx_provider="CUDAExecutionProvider"):
        assert onnx_provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
        assert os.path.exists(campplus_model), campplus_model
        self.mel_conf = mel_conf
        self.sample_rate = mel_conf["sampling_rate"]

    def extract_speech_feat(self, audio, audio_sr):
        x = _resample(audio[0].double().numpy(), audio_sr, self.sample_rate)
        hop, mels = self.mel_conf["hop_size"], self.mel_conf["num_mels"]
        frames = max(1, len(x) // hop)
        rms = [np.sqrt(np.mean(x[i * hop:(i + 1) * hop] ** 2) + 1e-10) for i in range(frames)]
        feat = np.log(np.asarray(rms))[:, None] + 0.01 * np.arange(mels)[None, :]
        feat = torch.tensor(feat, dtype=torch.float32)[None]
        return feat, torch.tensor([frames], dtype=torch.long)

    def extract_spk_embedding(self, audio, audio_sr):
        x = audio[0].double().numpy()
        stats = np.array([x.std(), np.abs(np.diff(np.sign(x))).mean(), audio_sr / 48000.0])
        emb = np.sin(np.arange(1, 193)[:, None] * stats[None, :]).sum(1)
        return torch.tensor(emb, dtype=torch.float32)[None]
'''

UPSTREAM_COSYVOICE = '''
"""Stand-in of the upstream CosyVoice wrapper (tests only): one clip per call, 24 kHz out,
0.12 s of audio per group of 5 codes."""
import os
import re

import numpy as np
import torch

from stepvocoder.cosyvoice2.cli.frontend import CosyVoiceFrontEnd


def _mel_conf(path):
    text = open(path).read()
    block = text.split("mel_conf:", 1)[1]
    conf = {}
    for line in block.splitlines()[1:]:
        if not line.startswith("    "):
            break
        key, value = (p.strip() for p in line.split(":", 1))
        conf[key] = value
    top = dict(re.findall(r"^(\\w+): (\\S+)$", text, re.M))
    out = {}
    for key, value in conf.items():
        if value.startswith("!ref"):
            value = top[value.split("<")[1].rstrip(">")]
        out[key] = False if value == "False" else int(value)
    return out


class CosyVoice:
    instances = 0

    def __init__(self, model_dir, chunk_size_list=(15, 24, 48), mel_cache_len=8, n_timesteps=10,
                 enable_cuda_graph=False, dtype=torch.float32):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        for name in ("flow.pt", "hift.pt", "campplus.onnx", "cosyvoice.yaml"):
            assert os.path.exists(os.path.join(model_dir, name)), name
        mel_conf = _mel_conf(os.path.join(model_dir, "cosyvoice.yaml"))
        self.cosy_impl = torch.nn.Linear(1, 1)
        self.frontend = CosyVoiceFrontEnd(
            mel_conf, campplus_model=os.path.join(model_dir, "campplus.onnx"),
            speech_tokenizer_model=os.path.join(model_dir, "speech_tokenizer_v1.onnx"))
        CosyVoice.instances += 1
        self.calls = 0

    def token2wav_nonstream(self, token, prompt_token, prompt_feat, embedding):
        assert token.dim() == 2 and token.shape[0] == 1, "the flow model takes one clip per call"
        assert prompt_token.dim() == 2 and prompt_token.shape[0] == 1
        assert prompt_feat.dim() == 3 and prompt_feat.shape[0] == 1 and prompt_feat.shape[2] == 80
        assert tuple(embedding.shape) == (1, 192)
        codes = token[0].tolist()
        assert len(codes) % 5 == 0 and all(0 <= c < 5120 for c in codes)
        self.calls += 1
        pitch = 120.0 + 40.0 * float(torch.tanh(embedding.float().mean()))
        t = np.arange(2880) / 24000.0
        pieces = []
        for g in range(len(codes) // 5):
            freq = pitch * (1.0 + (codes[5 * g] % 64) / 128.0)
            pieces.append(0.3 * np.sin(2 * np.pi * freq * t))
        speech = np.concatenate(pieces) if pieces else np.zeros(0)
        return torch.tensor(speech, dtype=torch.float32)[None]
'''

COSYVOICE_YAML = """\
# stand-in of CosyVoice-300M-25Hz/cosyvoice.yaml (tests only): hyperpyyaml tags as upstream
sample_rate: 24000
flow: !new:stepvocoder.cosyvoice2.flow.flow.CausalMaskedDiffWithXvec
    input_size: 512
    output_size: 80
hift: !new:stepvocoder.cosyvoice2.hifigan.generator.HiFTGenerator
    sampling_rate: !ref <sample_rate>
mel_conf:
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: 8000
    center: False
"""

_TRAINING_TEXT = """system
human
assistant
As a highly skilled audio editing and tuning specialist, you excel in interpreting user
instructions and applying precise adjustments to meet their needs.
Make the following audio more happy. The text corresponding to the audio is: hello world
Remove any emotion in the following audio and the reference text is: good morning
Remove any noise from the given audio while preserving the voice content clearly.
Remove any silent portions from the given audio. Ensure that the speech quality remains intact.
Add some non-verbal sounds to make the audio more natural, the new text is : [Laughter] yes
Generate audio with the following timbre, prosody and speaking style
[speaker_start] speaker name: clone speaker prompt text: speaker audio tokens: [speaker_end]
The quick brown fox jumps over the lazy dog. Speech editing at catalog scale.
"""

_TEMPLATE: dict[str, Path] = {}
_SHARED: dict[str, tuple[Path, Path]] = {}


def _write_tokenizer(folder: Path) -> None:
    """A real sentencepiece model: 0 <pad>, 1 <s>, 2 </s>, 3 <|EOT|>, 4 <|BOT|>, then text
    pieces, unused fillers up to 65535 and `<audio_0>`..`<audio_5119>` at 65536..70655."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_TRAINING_TEXT.splitlines() * 20),
        model_writer=buffer,
        vocab_size=340,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=5,
        control_symbols=["<|EOT|>", "<|BOT|>"],
        byte_fallback=True,
        character_coverage=1.0,
        minloglevel=2,
    )
    proto = model_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    piece_type = model_pb2.ModelProto.SentencePiece
    for i in range(len(proto.pieces), 65536):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = f"<unused_{i}>", 0.0, piece_type.UNUSED
    for code in range(5120):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = f"<audio_{code}>", 0.0, piece_type.USER_DEFINED
    (folder / "tokenizer.model").write_bytes(proto.SerializeToString())
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",
                "add_bos_token": False,
                "add_eos_token": False,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "pad_token": "<pad>",
                "unk_token": "<unk>",
                "legacy": True,
            },
            indent=2,
        )
    )


def _config(behavior: str) -> dict:
    return {
        "architectures": ["Step1ForCausalLM"],
        "model_type": "step1",
        "auto_map": {
            "AutoConfig": "configuration_step1.Step1Config",
            "AutoModelForCausalLM": "modeling_step1.Step1ForCausalLM",
        },
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_attention_groups": 2,
        "num_hidden_layers": 2,
        "max_seq_len": 8192,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.2,
        "standin_behavior": behavior,
        "bos_token_id": 1,
        "eos_token_id": 3,
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }


def write_step1_code(folder: Path, behavior: str = "audio", **overrides: object) -> None:
    """config.json + configuration_step1.py + modeling_step1.py (no weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_step1.py").write_text(textwrap.dedent(CONFIGURATION_STEP1))
    (folder / "modeling_step1.py").write_text(textwrap.dedent(MODELING_STEP1))
    config = _config(behavior)
    config.update(overrides)
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _save_shards(state: dict, folder: Path, shard_elements: int) -> None:
    """model-0000k-of-0000n.safetensors + model.safetensors.index.json, as published."""
    from safetensors.torch import save_file

    shards: list[dict] = [{}]
    size = 0
    for name, tensor in state.items():
        if size and size + tensor.numel() > shard_elements:
            shards.append({})
            size = 0
        shards[-1][name] = tensor.contiguous()
        size += tensor.numel()
    weight_map = {}
    total = 0
    for k, shard in enumerate(shards, start=1):
        file = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / file), metadata={"format": "pt"})
        for name, tensor in shard.items():
            weight_map[name] = file
            total += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _build_llm_template() -> Path:
    """The stand-in Step-Audio-EditX LLM folder (weights + tokenizer), built once per process."""
    if "llm" in _TEMPLATE:
        return _TEMPLATE["llm"]
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(tempfile.mkdtemp(prefix="stepaudio-standin-llm-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    write_step1_code(folder)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    config.tie_word_embeddings = False
    torch.manual_seed(1234)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    _save_shards(model.state_dict(), folder, shard_elements=2_500_000)
    _write_tokenizer(folder)
    _TEMPLATE["llm"] = folder
    return folder


def _placeholder(path: Path, text: str = "stand-in weights (tests only)\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_upstream_src(src: Path) -> Path:
    """The stand-in upstream checkout (module names and interfaces of the public repo)."""
    files = {
        "tokenizer.py": UPSTREAM_TOKENIZER,
        "model_loader.py": UPSTREAM_MODEL_LOADER,
        "stepvocoder/__init__.py": "",
        # like upstream, cosyvoice2/ and cli/ are namespace packages (no __init__.py)
        "stepvocoder/cosyvoice2/cli/frontend.py": UPSTREAM_FRONTEND,
        "stepvocoder/cosyvoice2/cli/cosyvoice.py": UPSTREAM_COSYVOICE,
        "requirements.txt": "numpy\ntorch\n",
    }
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return src


def make_standin_models(root: Path, behavior: str = "audio") -> tuple[Path, Path]:
    """Write a complete stand-in `--models` folder and upstream checkout under `root`.

    Returns (models_dir, src_dir). `behavior` picks the LM's output rules (see module doc).
    """
    if behavior not in BEHAVIORS:
        raise ValueError(f"behavior must be one of {BEHAVIORS}")
    root = Path(root)
    models = root / "models"
    tok = models / LAYOUT_TOKENIZER
    tok.mkdir(parents=True, exist_ok=True)
    np.save(tok / "linguistic_tokenizer.npy", np.zeros((1024, 4), dtype=np.float32))
    _placeholder(tok / "speech_tokenizer_v1.onnx")
    for name in PARAFORMER_FILES:
        _placeholder(tok / PARAFORMER / name)
    editx = models / LAYOUT_EDITX
    if editx.exists():
        shutil.rmtree(editx)
    shutil.copytree(_build_llm_template(), editx)
    write_step1_code(editx, behavior)
    cosy = editx / "CosyVoice-300M-25Hz"
    cosy.mkdir(parents=True, exist_ok=True)
    (cosy / "cosyvoice.yaml").write_text(COSYVOICE_YAML)
    for name in ("flow.pt", "hift.pt", "campplus.onnx"):
        _placeholder(cosy / name)
    src = write_upstream_src(root / "stepaudio-src")
    return models, src


def shared_standins(behavior: str = "audio") -> tuple[Path, Path]:
    """`make_standin_models` under a per-process temporary folder, made once per behavior.
    Treat the result as read-only."""
    if behavior not in _SHARED:
        root = Path(tempfile.mkdtemp(prefix=f"stepaudio-standin-{behavior}-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _SHARED[behavior] = make_standin_models(root, behavior)
    return _SHARED[behavior]


def tone(
    seconds: float,
    rate: int = 24000,
    freq: float = 220.0,
    channels: int = 1,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A test clip: a tone with a slow tremolo (frames, channels) float32."""
    t = np.arange(int(seconds * rate)) / rate
    mono = amplitude * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)
