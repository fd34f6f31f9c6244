"""Generated tokens/s of the Step-Audio-EditX generation loop on the CPU, against an earlier
version of the loop.

The model is the tests' Step1 stand-in (ALiBi attention that ignores the mask, grouped KV heads)
with random weights, small enough for a CPU. Two workloads, batch 8 by default:

- `stragglers`: the stand-in's "audio" rules answer about as many codes as the prompt's audio,
  and the prompts hold 15 to 200 codes, so clips finish far apart (the case where finished rows
  leaving the batch matters);
- `uniform`: ~450-id prompts, exactly 48 new ids each (EOS suppressed), so every row runs to the
  end (the case that only the attention's cost changes).

`--baseline FILE` loads another `llm.py` (e.g. `git show REF:stepedit_core/engines/stepaudio/
llm.py > /tmp/llm_before.py`) and runs it on an identically built model, alternating with the
current code so that load on a shared machine hits both alike. Both must generate the same ids
(checked, recorded as `same_ids`). On a shared machine wall time mostly measures the neighbours,
so the main figure is tokens per CPU-second of this process (`tokens_per_cpu_s`, best of
`--repeats`, one torch thread by default); wall-clock tokens/s is recorded next to it.

Run: `python benchmarks/llm_batch_cpu.py --baseline /tmp/llm_before.py --baseline-label main`
-> benchmarks/results/llm_batch_cpu.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

from stepedit_core.engines.stepaudio import llm as current_llm  # noqa: E402
from stepedit_core.engines.stepaudio import tokens  # noqa: E402

from machine import machine_info, write_result  # noqa: E402
from stepaudio_standins import write_step1_code  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NEW_UNIFORM = 48
SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 8,
    "num_attention_groups": 2,
    "num_hidden_layers": 4,
    "vocab_size": tokens.AUDIO_ID_OFFSET + tokens.N_CODES,
    "initializer_range": 0.05,
}


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("llm_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"can not load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def build_model(behavior: str, llm: ModuleType) -> torch.nn.Module:
    folder = Path(tempfile.mkdtemp(prefix="llm-cpu-bench-"))
    write_step1_code(folder, behavior, **SHAPE)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True, local_files_only=True)
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, trust_remote_code=True).eval()
    llm.attention_kind(model)  # patches the attention with that version's forward
    return model


def make_prompts(workload: str, batch: int) -> list[list[int]]:
    rng = random.Random(batch)
    prompts = []
    for row in range(batch):
        if workload == "stragglers":
            groups = 3 + round(37 * row / max(1, batch - 1))  # 15..200 codes
        else:
            groups = int(80 * rng.uniform(0.95, 1.05))  # ~400 codes
        codes = []
        for _ in range(groups):
            codes += [rng.randrange(1024), rng.randrange(1024)]
            codes += [1024 + rng.randrange(4096) for _ in range(3)]
        text = [rng.randrange(5, 300) for _ in range(40)]
        prompts.append([1, 4, *text, 3, 4, *tokens.to_ids(codes), 3, 4, 9, 10])
    return prompts


def run_once(llm: ModuleType, model, workload: str, prompts, seeds) -> tuple[float, float, list]:
    """(wall seconds, CPU seconds of this process, generated ids)."""
    if workload == "uniform":
        cfg = llm.SamplingConfig(min_new_tokens=NEW_UNIFORM, max_new_tokens=NEW_UNIFORM)
    else:
        cfg = llm.SamplingConfig()
    wall, cpu = time.perf_counter(), time.process_time()
    out = llm.generate(model, prompts, seeds, cfg)
    return time.perf_counter() - wall, time.process_time() - cpu, [o.ids for o in out]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, default=None, help="an earlier llm.py")
    parser.add_argument("--baseline-label", default="baseline")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workloads", default="stragglers,uniform")
    parser.add_argument("--out", type=Path, default=RESULTS / "llm_batch_cpu.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    versions = {"current": current_llm}
    if args.baseline:
        versions = {args.baseline_label: load_module(args.baseline), "current": current_llm}
    results = []
    for workload in args.workloads.split(","):
        behavior = "audio" if workload == "stragglers" else "free"
        models = {name: build_model(behavior, mod) for name, mod in versions.items()}
        prompts = make_prompts(workload, args.batch)
        seeds = list(range(args.batch))
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
        ids: dict[str, list] = {}
        for name, mod in versions.items():  # warm-up
            run_once(mod, models[name], workload, prompts[:1], seeds[:1])
        for _ in range(args.repeats):
            for name, mod in versions.items():
                wall, cpu, ids[name] = run_once(mod, models[name], workload, prompts, seeds)
                times[name].append((wall, cpu))
        generated = sum(len(i) for i in ids["current"])
        row = {
            "workload": workload,
            "batch": args.batch,
            "prompt_tokens": [len(p) for p in prompts],
            "new_tokens": [len(i) for i in ids["current"]],
            "generated_tokens": generated,
            "same_ids": len({json.dumps(i) for i in ids.values()}) == 1,
        }
        for name in versions:
            row[name] = {
                "wall_seconds": [round(w, 3) for w, _ in times[name]],
                "cpu_seconds": [round(c, 3) for _, c in times[name]],
                "tokens_per_cpu_s": round(generated / min(c for _, c in times[name]), 1),
                "tokens_per_s": round(generated / min(w for w, _ in times[name]), 1),
            }
        if args.baseline:
            base = row[args.baseline_label]["tokens_per_cpu_s"]
            row["speedup_cpu"] = round(row["current"]["tokens_per_cpu_s"] / base, 2)
        results.append(row)
        print(json.dumps(row))

    report = {
        "benchmark": "llm_batch_cpu",
        "machine": {**machine_info(), "torch_threads": torch.get_num_threads()},
        "model": {
            "code": "tests/stepaudio_standins.py Step1 stand-in (ALiBi, GQA), random weights",
            "shape": SHAPE,
            "dtype": "float32",
        },
        "sampling": "temperature 0.7, top-k 50, per-clip seeds, repetition rule",
        "baseline": str(args.baseline_label) if args.baseline else None,
        "results": results,
    }
    write_result(args.out, report, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
