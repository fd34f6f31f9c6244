"""Generated tokens/s of the Step-Audio-EditX LLM at batch 1, 8, 32 and 64 on one GPU.

The model has the EditX LLM's shape (32 layers, hidden 3072, 48 heads, 4 KV groups, vocab 74752,
bf16; the intermediate size 8192 is an assumption) and random weights. Its code is the tests'
stand-in for the shipped Step1 code (ALiBi attention that ignores the attention mask, lm_head
over every position), so generation goes through exactly what the engine runs on the real
model: `stepedit_core.engines.stepaudio.llm.generate`, with the padded-ALiBi attention patch,
left padding, per-clip seeds, the repetition rule, temperature 0.7 and top-k 50.

Workload: 10-second edits, ~420 prompt ids (lengths spread +-5 % so batches are padded) and
exactly 420 new ids (EOS is suppressed until then). Each batch is timed twice: prefill only
(1 new id) and the whole generation; tokens/s counts generated ids.

Run: `python benchmarks/llm_batch_gpu.py` -> benchmarks/results/llm_batch_gpu.json (one GPU,
well under 10 minutes). Without CUDA it stops with a message. `--tiny` runs the same code with a
tiny model on the CPU (a smoke test) -> benchmarks/results/llm_batch_gpu_tiny.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from stepedit_core.engines.stepaudio import tokens  # noqa: E402
from stepedit_core.engines.stepaudio.llm import (  # noqa: E402
    SamplingConfig,
    attention_kind,
    dtype_kwarg,
    generate,
)

from stepaudio_standins import write_step1_code  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
EDITX_SHAPE = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_attention_heads": 48,
    "num_attention_groups": 4,
    "num_hidden_layers": 32,
    "vocab_size": 74752,
    "initializer_range": 0.02,
}
TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_attention_groups": 2,
    "num_hidden_layers": 2,
    "vocab_size": 74752,
    "initializer_range": 0.02,
}


def build_model(shape: dict, device: str, dtype: torch.dtype) -> torch.nn.Module:
    folder = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    write_step1_code(folder, "free", **shape)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            config, trust_remote_code=True, **{dtype_kwarg(): dtype}
        )
    model.eval()
    attention_kind(model)  # patches the attention as the engine does
    return model


def make_prompts(batch: int, length: int, rng: random.Random) -> list[list[int]]:
    prompts = []
    for _ in range(batch):
        n = max(16, int(length * rng.uniform(0.95, 1.05)))
        text = [rng.randrange(5, 60000) for _ in range(60)]
        audio = [tokens.AUDIO_ID_OFFSET + rng.randrange(tokens.N_CODES) for _ in range(n)]
        prompts.append(([1, 4] + text + [3, 4] + audio + [3, 4, 9, 10])[:n])
    return prompts


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model, device: str, batch: int, prompt_len: int, new: int) -> dict:
    rng = random.Random(batch)
    prompts = make_prompts(batch, prompt_len, rng)
    seeds = list(range(batch))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    generate(model, prompts, seeds, SamplingConfig(max_new_tokens=1, min_new_tokens=1))
    sync(device)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    out = generate(model, prompts, seeds, SamplingConfig(min_new_tokens=new, max_new_tokens=new))
    sync(device)
    total = time.perf_counter() - start
    lengths = [len(o.ids) for o in out]
    if lengths != [new] * batch:
        raise RuntimeError(f"expected {new} new ids per clip, got {sorted(set(lengths))}")
    row = {
        "batch": batch,
        "prompt_tokens_mean": round(sum(map(len, prompts)) / batch, 1),
        "prompt_tokens_max": max(map(len, prompts)),
        "new_tokens": new,
        "generated_tokens": batch * new,
        "seconds": round(total, 3),
        "prefill_seconds": round(prefill, 3),
        "tokens_per_s": round(batch * new / total, 1),
        "decode_tokens_per_s": round(batch * (new - 1) / max(1e-9, total - prefill), 1),
        "ms_per_step": round(1000 * (total - prefill) / max(1, new - 1), 2),
        "audio_seconds_per_s": round(tokens.seconds(batch * new) / total, 2),
    }
    if device.startswith("cuda"):
        row["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def machine(device: str) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": metadata.version("transformers"),
        "device": device,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            gpu_count=torch.cuda.device_count(),
        )
    else:
        info["torch_threads"] = torch.get_num_threads()
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (smoke test)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--prompt", type=int, default=None, help="prompt ids per clip")
    parser.add_argument("--new", type=int, default=None, help="new ids per clip")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="skip the remaining batch sizes once this much time is spent",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.tiny:
        device, dtype, shape = "cpu", torch.float32, TINY_SHAPE
        batches, prompt_len, new = [1, 2, 4], args.prompt or 60, args.new or 20
        out_path = args.out or RESULTS / "llm_batch_gpu_tiny.json"
    else:
        if not torch.cuda.is_available():
            print(
                "llm_batch_gpu: no CUDA device here; this benchmark needs one GPU "
                "(`--tiny` runs the same code path with a tiny model on the CPU)",
                file=sys.stderr,
            )
            return 2
        device, dtype, shape = "cuda", torch.bfloat16, EDITX_SHAPE
        batches, prompt_len, new = [1, 8, 32, 64], args.prompt or 420, args.new or 420
        out_path = args.out or RESULTS / "llm_batch_gpu.json"
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]

    started = time.perf_counter()
    model = build_model(shape, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    build_s = time.perf_counter() - started
    print(f"model: {params / 1e9:.2f} B parameters, built in {build_s:.1f} s on {device}")
    measure(model, device, 1, min(prompt_len, 64), 4)  # warm-up (kernels, allocator)

    results, skipped = [], []
    for batch in batches:
        if time.perf_counter() - started > args.budget_s:
            skipped.append(batch)
            continue
        row = measure(model, device, batch, prompt_len, new)
        results.append(row)
        print(json.dumps(row))

    report = {
        "benchmark": "llm_batch_gpu",
        "mode": "tiny CPU smoke test (not a measurement)" if args.tiny else "full",
        "machine": machine(device),
        "model": {
            "code": "tests/stepaudio_standins.py Step1 stand-in (ALiBi, GQA), random weights",
            "shape": shape,
            "dtype": str(dtype).replace("torch.", ""),
            "parameters": params,
            "attention": getattr(model, "_stepedit_attention", None),
        },
        "workload": {
            "prompt_tokens": prompt_len,
            "prompt_spread": "+-5 % (left padding)",
            "new_tokens": new,
            "sampling": "temperature 0.7, top-k 50, per-clip seeds, repetition rule",
            "audio_seconds_per_clip": round(tokens.seconds(new), 2),
        },
        "build_seconds": round(build_s, 1),
        "results": results,
        "skipped_batches": skipped,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
