"""Rollout throughput of the `hf` and `vllm` backends on the tiny local Qwen3 (issue 3).

Both backends sample with the same random, non-zero peft LoRA (r16, all linear projections) applied:
`hf` from a live PeftModel (as the trainer shares it), `vllm` from the adapter saved to disk and
hot-loaded. fp32, one thread, temperature 1, no stop tokens (EOS ignored too), so every completion is
exactly `max_tokens` long and both backends produce the same number of tokens. Each setting is warmed
up once per backend, then the backends alternate for R repeats (hf, vllm, hf, vllm, ...) so drift in
machine load hits both; the table reports medians.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_rollout.py [--repeats 5] [--out docs/bench_rollout.json]
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_rollout.py --quick     # CI size, ~30 s
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 16, 32
QUESTIONS = ["Write a number.", "Give me some digits.", "What is the count?", "Add them up."]


def machine() -> dict[str, Any]:
    import torch

    return {
        "date": datetime.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def build_policy(model_path: str, adapter_dir: Path) -> tuple[Any, Any]:
    """The tiny base with a random LoRA (B != 0, unlike peft's default init), saved for vLLM."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False, task_type="CAUSAL_LM"
    )
    model = get_peft_model(base, lora).eval()
    model.save_pretrained(str(adapter_dir))
    return model, AutoTokenizer.from_pretrained(model_path)


def make_prompts(tokenizer: Any, count: int) -> list[list[int]]:
    out = []
    for i in range(count):
        messages = [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return out


def make_backends(names: list[str], model: Any, tokenizer: Any, model_path: str, adapter: Path) -> dict:
    import torch

    from rltrain.rollout.hf_backend import HFBackend

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    backends: dict[str, Any] = {}
    if "hf" in names:
        backends["hf"] = HFBackend(decode, tokenizer.pad_token_id, torch.device("cpu"), policy_model=model)
    if "vllm" in names:
        backends["vllm"] = vllm_backend(model_path, adapter)
    return backends


def vllm_backend(
    model_path: str, adapter: Path, device: str = "cpu", detokenize: bool = True, **rollout: Any
) -> Any:
    """rltrain's VLLMBackend with EOS ignored (an empty stop list still stops at the model's EOS in vLLM),
    the adapter at `adapter` loaded. Shared with bench_gpu.py, which turns detokenising off."""
    from rltrain.config import RolloutConfig
    from rltrain.rollout.vllm_backend import VLLMBackend

    class NoEosVLLM(VLLMBackend):
        def _vllm_params(self, sampling: Any, n: int, seed: int | None) -> Any:
            return self._vllm.SamplingParams(
                n=n,
                temperature=sampling.temperature,
                max_tokens=sampling.max_tokens,
                ignore_eos=True,
                logprobs=0,  # the trainer needs the sampled token's logprob: keep that cost in
                seed=seed,
                detokenize=detokenize,
                skip_special_tokens=True,
            )

    dtype = "float32" if device == "cpu" else "bfloat16"
    config = RolloutConfig(backend="vllm", **rollout)
    backend = NoEosVLLM(model_path, rollout=config, dtype=dtype, max_lora_rank=RANK, seed=0, device=device)
    backend.load_adapter(adapter, 1)
    return backend


def time_once(
    backend: Any, prompts: list[list[int]], n: int, max_tokens: int, seed: int
) -> tuple[float, float, int]:
    """Wall seconds, process CPU seconds and completion tokens of one generate call.

    CPU time next to wall time: on a shared machine other jobs inflate wall time, barely CPU time (one
    thread, in-process vLLM engine). Both backends return host-side results, so no device sync is needed.
    """
    from rltrain.types import SamplingParams

    sp = SamplingParams(max_tokens=max_tokens, temperature=1.0, stop_token_ids=(), seed=seed)
    start, cpu = time.perf_counter(), time.process_time()
    groups = backend.generate(prompts, n, sp)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, sum(len(c.token_ids) for g in groups for c in g.completions)


def run_setting(
    backends: dict[str, Any], prompts: list[list[int]], n: int, max_tokens: int, repeats: int
) -> dict[str, Any]:
    """Warm-up once per backend, then alternate the backends `repeats` times; medians per backend."""
    for b in backends.values():
        time_once(b, prompts, n, max_tokens, seed=12345)
    runs: dict[str, list[float]] = {name: [] for name in backends}
    cpu: dict[str, list[float]] = {name: [] for name in backends}
    tokens: dict[str, int] = {}
    for r in range(repeats):
        order = list(backends) if r % 2 == 0 else list(reversed(backends))  # neither always goes first
        for name in order:
            seconds, cpu_s, tokens[name] = time_once(backends[name], prompts, n, max_tokens, seed=r)
            runs[name].append(round(seconds, 4))
            cpu[name].append(round(cpu_s, 4))
    out: dict[str, Any] = {"prompts": len(prompts), "group": n, "max_tokens": max_tokens}
    for name, secs in runs.items():
        med, med_cpu = statistics.median(secs), statistics.median(cpu[name])
        out[name] = {"median_s": med, "tok_s": tokens[name] / med, "median_cpu_s": med_cpu}
        out[name] |= {"tok_per_cpu_s": tokens[name] / med_cpu, "output_tokens": tokens[name], "runs_s": secs}
    both = "hf" in out and "vllm" in out
    out["ratio_vllm_over_hf"] = out["vllm"]["tok_s"] / out["hf"]["tok_s"] if both else None
    out["ratio_cpu_vllm_over_hf"] = (
        out["vllm"]["tok_per_cpu_s"] / out["hf"]["tok_per_cpu_s"] if both else None
    )
    return out


def print_table(results: list[dict[str, Any]], names: list[str]) -> None:
    cols = "".join(f"{n + ' s':>10}{n + ' tok/s':>13}{n + ' tok/cpu-s':>15}" for n in names)
    print(f"{'prompts x group x tokens':>26}{cols}{'vllm/hf':>9}{'(cpu)':>7}")
    for r in results:
        line = f"{r['prompts']:>10} x {r['group']:>4} x {r['max_tokens']:>5}"
        line += "".join(
            f"{r[n]['median_s']:>10.3f}{r[n]['tok_s']:>13,.0f}{r[n]['tok_per_cpu_s']:>15,.0f}" for n in names
        )
        ratios = (r["ratio_vllm_over_hf"], r["ratio_cpu_vllm_over_hf"])
        print(line + "".join(f"{x:>9.2f}" if x is not None else f"{'-':>9}" for x in ratios))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, nargs="+", default=[8, 32], help="completions per prompt")
    p.add_argument("--lengths", type=int, nargs="+", default=[32, 128], help="tokens per completion")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", nargs="+", choices=["hf", "vllm"], default=None, help="default: all present")
    p.add_argument("--quick", action="store_true", help="CI size: group 8, 32 tokens, 2 repeats")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "bench_rollout.json")
    args = p.parse_args(argv)
    if args.quick:
        args.groups, args.lengths, args.repeats = [8], [32], 2
    if args.backends is None:
        args.backends = ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads: one thread suits the tiny model
    import torch

    from rltrain.tiny import tiny_model_path

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    model_path = str(tiny_model_path("qwen3"))
    info = {"machine_before": machine()}
    with tempfile.TemporaryDirectory(prefix="bench-rollout-") as tmp:
        model, tokenizer = build_policy(model_path, Path(tmp) / "adapter")
        prompts = make_prompts(tokenizer, args.prompts)
        backends = make_backends(args.backends, model, tokenizer, model_path, Path(tmp) / "adapter")
        try:
            results = [
                run_setting(backends, prompts, n, length, args.repeats)
                for length in args.lengths
                for n in args.groups
            ]
        finally:
            for b in backends.values():
                b.close()
    settings = {"model": "tiny qwen3 (fp32)", "lora": f"r{RANK} a{ALPHA} {','.join(TARGETS)}"}
    settings |= {"temperature": 1.0, "stop_tokens": "none (EOS ignored)", "repeats": args.repeats}
    settings |= {"backends": list(backends), "warmup_runs": 1, "statistic": "median"}
    report = {"settings": settings, **info, "machine_after": machine(), "results": results}
    print_table(results, list(backends))
    print(
        f"load average before {info['machine_before']['loadavg']}, after {report['machine_after']['loadavg']}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
