"""One-GPU throughput of rltrain at Qwen3-0.6B's shape: rollout tok/s, trainer tok/s, MFU, peak memory.

Fits 10 minutes on one H100/H200 with no network: a random model of Qwen3-0.6B's shape (bf16, nothing
downloaded), LoRA r16 α32 on every linear projection. Rollouts on each backend present (`hf` always,
`vllm` when importable); the trainer through rltrain's own `train_step` on hand-made GRPO samples at two
sequence lengths, micro-batch size tuned, in both trainer layouts: `padded` (a row per sample) and
`packed` (each group's prompt once, no padding; rltrain's default). Target: >= 20k trained tokens/s.
Each measurement is guarded (a failure is recorded, the rest run) under a global time budget.
`--tiny`: the same code, CPU, tiny model.

FLOPs per trained token (frozen base + LoRA; the frozen base gets no weight gradients):
  4·N_lin          base linears: forward 2·N_lin + backward activation-gradient 2·N_lin
+ 6·N_lora         LoRA factors: forward 2 + activation-gradient 2 + weight-gradient 2
+ 6·L·H·d_head·S   causal attention: forward 2·L·H·d_head·S (mean context S/2), backward twice that
+ 4·V·d·T/S        lm_head on the T completion positions only (forward + activation-gradient; frozen)
Trained tok/s counts every sample's prompt and completion (the logical work, as peers count it); the
packed layout runs fewer tokens (`forward_tokens`), and its FLOPs are those tokens' (so MFU stays honest).
MFU = FLOPs/s / the card's peak dense bf16; `mfu_6n` (6·N_total per token, the full-fine-tuning
convention, which overstates LoRA's work) for comparison.   Run: python scripts/bench_gpu.py [--tiny]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).parent)]  # rltrain

import torch  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGET_TOK_S = 20_000
LAYOUTS = ("padded", "packed")  # rltrain's trainer rows: a prompt per sample, or each group's once
# dense bf16 by the exact card (datasheets): the NVL and PCIe parts run lower clocks than SXM. Checked in
# order: the first entry whose words all appear in torch's device name wins, so variants come first.
PEAK_BF16_TFLOPS = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.5,
    "H200 NVL": 835.5,
    "H100": 989.4,  # SXM: "NVIDIA H100 80GB HBM3"
    "H200": 989.4,  # SXM: "NVIDIA H200"
    "H800": 989.4,
    "A100": 312.0,
}
# Qwen3-0.6B's config.json; only the shape matters for throughput.
QWEN3_06B = dict(
    vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=40960, rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1e6}, tie_word_embeddings=True,
    attention_bias=False,
)  # fmt: skip
GPU = dict(seq_lens=[1024, 4096], tokens_per_step=32768, mb_tokens=[8192, 16384, 32768], steps=3)
GPU |= dict(rollouts=[(8, 16, 256), (8, 16, 1024)], prompt_len=128, budget_s=540.0)
TINY = dict(seq_lens=[64, 128], tokens_per_step=1024, mb_tokens=[256, 512], steps=2)
TINY |= dict(rollouts=[(2, 4, 16), (2, 8, 32)], prompt_len=16, budget_s=50.0)


def import_rltrain() -> bool:
    """rltrain.trainer imports rltrain.config (pydantic), which the GPU image may lack (gpu_check.sh carries
    it as a wheel). The trainer path this script drives uses config classes only in annotations, so without
    pydantic a stand-in that answers every name will do. True when it was needed."""
    try:
        return importlib.import_module("rltrain.config") is None
    except ImportError:
        stub = types.ModuleType("rltrain.config")
        stub.__getattr__ = lambda name: Any  # type: ignore[method-assign]  # any class the trainer names
        sys.modules["rltrain.config"] = stub
        return True


def peak_tflops(device: torch.device) -> tuple[str, float | None]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    # the first key whose words all appear in the name: "H100 PCIe" is listed before "H100" on purpose
    return name, next((t for k, t in PEAK_BF16_TFLOPS.items() if all(w in name for w in k.split())), None)


def build_model(tiny: bool, device: torch.device, save: Path | None) -> tuple[Any, Any]:
    """The LoRA model (B random: not a no-op adapter) and the base config; with `save`, the base model
    (with the tiny tokenizer) and the adapter are written there for vLLM."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    from rltrain.tiny import tiny_model_path

    torch.manual_seed(0)
    tiny_path = str(tiny_model_path("qwen3"))
    if tiny:
        base = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    else:
        with device:  # initialise on the GPU: 0.6B parameters on the host take far longer
            base = AutoModelForCausalLM.from_config(Qwen3Config(**QWEN3_06B), dtype=torch.bfloat16)
    base.to(device)
    if save is not None:
        base.save_pretrained(str(save / "base"))
        AutoTokenizer.from_pretrained(tiny_path).save_pretrained(str(save / "base"))
    lora = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False)
    model = get_peft_model(base, lora)
    if save is not None:
        model.save_pretrained(str(save / "adapter"))
    return model, base.config


def param_counts(model: Any, cfg: Any) -> dict[str, int]:
    """Linear weights inside the decoder layers, the frozen base's and the LoRA factors'."""
    lin = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name:
            lora += module.weight.numel() if ".lora_" in name else 0
            lin += module.weight.numel() if ".lora_" not in name else 0
    total = sum(p.numel() for p in model.parameters())
    return dict(total=total, base_linear=lin, lora=lora, vocab=cfg.vocab_size, hidden=cfg.hidden_size)


def sync(device: torch.device) -> None:
    """Wait for queued kernels: a timer read without this measures the launch, not the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mem_gib(device: torch.device, reset: bool = False) -> dict[str, float | None]:
    """Peak allocated (tensors) and reserved (the caching allocator's hold: what the card must have)."""
    if device.type != "cuda":
        return {"peak_mem_gib": None, "peak_reserved_gib": None}
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return {
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30,
    }


def guarded(fn: Any, *args: Any) -> dict[str, Any]:
    """Run one measurement; an exception becomes an `error` entry instead of ending the script."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001  (any failure: record it, keep the other measurements)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {"error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}


def make_samples(count: int, seq: int, prompt: int, vocab: int, group: int = 8) -> list[Any]:
    """Hand-made GRPO samples of one length, groups of `group` sharing their prompt, advantages ±1."""
    from rltrain.types import Sample

    gen, out, comp = torch.Generator().manual_seed(0), [], seq - prompt
    for i in range(count):
        if i % group == 0:
            shared = torch.randint(0, vocab, (prompt,), generator=gen).tolist()
        ids, adv = torch.randint(0, vocab, (comp,), generator=gen).tolist(), 1.0 if i % 2 else -1.0
        out.append(Sample(shared, ids, [-12.0] * comp, [1] * comp, adv, adv, i // group))
    return out


def forward_tokens(samples: list[Any], layout: str) -> int:
    """Tokens the model runs: every sample's prompt when padded (all one length here), each group's once
    when packed."""
    if layout == "padded":
        return sum(s.num_tokens for s in samples)
    prompts = {(s.group_id, tuple(s.prompt_ids)): len(s.prompt_ids) for s in samples}
    return sum(prompts.values()) + sum(len(s.completion_ids) for s in samples)


def time_train(policy: Any, samples: list[Any], settings: Any, steps: int) -> dict[str, Any]:
    from rltrain.trainer.step import train_step

    times = []
    for _ in range(steps + 1):  # the first step is warm-up (allocator, kernels)
        sync(policy.device)
        start = time.perf_counter()
        train_step(policy, samples, settings)
        sync(policy.device)
        times.append(time.perf_counter() - start)
    return {"step_s": statistics.median(times[1:])}


def bench_trainer(ctx: dict[str, Any], seq: int, layout: str) -> dict[str, Any]:
    """Trained tok/s at one sequence length in one layout: the fastest of the micro-batch sizes in
    ctx['mb_tokens'] (packed rows hold a micro-batch's tokens in one row)."""
    from rltrain.algo.loss import LossConfig
    from rltrain.trainer.step import TrainSettings

    prompt, count = seq // 4, max(8, ctx["tokens_per_step"] // seq)  # only completions reach lm_head
    samples, tried = make_samples(count, seq, prompt, ctx["counts"]["vocab"]), []
    for mbs in sorted({min(count, max(1, t // seq)) for t in ctx["mb_tokens"]}):
        rows = mbs * seq if layout == "packed" else 0
        settings = TrainSettings(LossConfig(), mbs, seq - prompt, 1.0, 1.0, row_tokens=rows)
        if ctx["deadline"] - time.perf_counter() < 20:
            tried.append({"micro_batch_size": mbs, "error": "skipped: time budget"})
            continue
        mem_gib(ctx["device"], reset=True)
        row = guarded(time_train, ctx["policy"], samples, settings, ctx["steps"])
        tried.append({"micro_batch_size": mbs, **row, **mem_gib(ctx["device"])})
        if "out of memory" in row.get("error", ""):
            break  # larger micro-batches will not fit either
    fwd = forward_tokens(samples, layout)
    out: dict[str, Any] = {"seq_len": seq, "layout": layout, "prompt_len": prompt, "samples_per_step": count}
    out |= {"forward_tokens": fwd, "tried": tried}
    ok = [r for r in tried if "step_s" in r]
    if not ok:
        return out | {"error": "no micro-batch size ran"}
    best = min(ok, key=lambda r: r["step_s"])
    tok_s = count * seq / best["step_s"]  # every token through forward and backward
    loss_tok_s = count * (seq - prompt) / best["step_s"]  # the completion tokens the loss is taken on
    c, cfg = ctx["counts"], ctx["cfg"]  # FLOPs per trained token: the formula in the module docstring
    attn = 6 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq
    head = 4 * c["vocab"] * c["hidden"] * (seq - prompt) / seq
    flops = (4 * c["base_linear"] + 6 * c["lora"] + attn + head) * tok_s * fwd / (count * seq)
    peak = ctx["peak"] * 1e12 if ctx["peak"] else None
    out |= {k: best[k] for k in ("micro_batch_size", "step_s", "peak_mem_gib", "peak_reserved_gib")}
    out |= {"trained_tok_s": tok_s, "loss_tok_s": loss_tok_s}
    out |= {"tflops": flops / 1e12, "mfu": flops / peak if peak else None}
    out["mfu_6n"] = 6 * ctx["counts"]["total"] * tok_s * fwd / (count * seq) / peak if peak else None
    return out


def rollout_backend(name: str, ctx: dict[str, Any]) -> Any:
    if name == "hf":  # no tokenizer at this shape: the timing needs no text
        from rltrain.rollout.hf_backend import HFBackend

        return HFBackend(lambda ids: "", 0, ctx["device"], policy_model=ctx["policy"].model)
    from bench_rollout import vllm_backend  # a sibling script: see sys.path above

    # no detokenising: the saved (tiny) tokenizer is smaller than the vocabulary
    longest = ctx["prompt_len"] + max(r[2] for r in ctx["rollouts"])
    path, device = str(ctx["saved"] / "base"), ctx["device"].type
    engine = {"max_model_len": longest, "gpu_memory_utilization": 0.35}
    return vllm_backend(path, ctx["saved"] / "adapter", device, False, **engine)


def bench_rollouts(ctx: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """One backend (one engine start) over every rollout setting, each guarded on its own."""
    start, rows, gen = time.perf_counter(), [], torch.Generator().manual_seed(1)
    made = guarded(lambda: {"backend": rollout_backend(name, ctx)})
    if "error" in made:
        return [{"backend": name, **made}]
    backend, startup = made["backend"], time.perf_counter() - start
    try:
        for prompts_n, group, tokens in ctx["rollouts"]:
            row = dict(backend=name, prompts=prompts_n, group=group, max_tokens=tokens, startup_s=startup)
            # random ids below 1024: vLLM refuses prompt ids that its (tiny, saved) tokenizer does not know
            prompts = torch.randint(0, 1024, (prompts_n, ctx["prompt_len"]), generator=gen).tolist()
            if ctx["deadline"] - time.perf_counter() < 15:
                rows.append(row | {"error": "skipped: time budget"})
                continue
            rows.append(row | guarded(timed_rollout, ctx, backend, prompts, group, tokens))
    finally:
        backend.close()  # a vLLM engine holds GPU memory
    return rows


def timed_rollout(ctx: dict, backend: Any, prompts: list[list[int]], group: int, tokens: int) -> dict:
    from bench_rollout import time_once  # a sibling script: see sys.path above

    time_once(backend, prompts[:1], 2, 4, seed=0)  # warm-up
    mem_gib(ctx["device"], reset=True)
    sync(ctx["device"])
    seconds, _, made = time_once(backend, prompts, group, tokens, seed=0)  # exact lengths: EOS ignored
    return dict(seconds=seconds, tok_s=made / seconds, output_tokens=made, **mem_gib(ctx["device"]))


def make_report(tiny: bool, plan: dict, ctx: dict, trainer: list[dict], rollout: list[dict]) -> dict:
    best = max((r["trained_tok_s"] for r in trainer if "trained_tok_s" in r), default=None)
    flops = " ".join(__doc__.split("FLOPs per trained token")[1].split("MFU =")[0].split())
    settings = {k: v for k, v in plan.items() if k != "budget_s"} | {"tiny": tiny, "flops_per_token": flops}
    settings["layouts"] = list(LAYOUTS)
    lora = "r16 a32 " + ",".join(TARGETS)
    model = ctx["counts"] | {"layers": ctx["cfg"].num_hidden_layers, "lora_config": lora}
    device = {"name": ctx["name"], "peak_bf16_tflops": ctx["peak"], "torch": torch.__version__}
    met = bool(best and best >= TARGET_TOK_S)
    target = dict(trained_tok_s=TARGET_TOK_S, best_trained_tok_s=best, met=met)
    report = {"settings": settings, "device": device, "model": model}
    tok_s = {(r.get("seq_len"), r.get("layout")): r.get("trained_tok_s") for r in trainer}
    both = [q for q in plan["seq_lens"] if tok_s.get((q, "packed")) and tok_s.get((q, "padded"))]
    report["packed_over_padded"] = {str(q): tok_s[q, "packed"] / tok_s[q, "padded"] for q in both}
    return report | {"trainer": trainer, "rollout": rollout, "target": target}


def print_tables(report: dict[str, Any]) -> None:
    dev, t = report["device"], report["target"]
    print(f"device: {dev['name']} (peak bf16 {dev['peak_bf16_tflops']} TFLOP/s), torch {dev['torch']}")
    trainer = (
        "seq_len",
        "layout",
        "forward_tokens",
        "micro_batch_size",
        "step_s",
        "trained_tok_s",
        "loss_tok_s",
        "tflops",
        "mfu",
    )
    trainer += ("peak_mem_gib", "peak_reserved_gib")
    rollout = (
        "backend",
        "prompts",
        "group",
        "max_tokens",
        "seconds",
        "tok_s",
        "peak_mem_gib",
        "peak_reserved_gib",
    )
    for table, keys in (("trainer", trainer), ("rollout", rollout)):
        print(f"{table}:", "  ".join(keys))
        for r in report[table]:
            print("  ", *(_fmt(r.get(k)) for k in keys), *(["error:", r["error"]] if "error" in r else []))
    best = _fmt(t["best_trained_tok_s"])
    for seq, ratio in report["packed_over_padded"].items():
        print(f"packed / padded trained tok/s at seq_len {seq}: {ratio:.2f}x")
    print(f"target >= {t['trained_tok_s']:,} trained tok/s: {'met' if t['met'] else 'NOT met'} (best {best})")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return "-" if v is None else str(v)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="the tiny local model on CPU (a smoke run, < 60 s)")
    p.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    p.add_argument("--budget-s", type=float, default=None, help="global time budget (default 540, tiny 50)")
    p.add_argument("--no-vllm", action="store_true", help="hf rollouts only, even where vllm imports")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = dict(TINY if args.tiny else GPU)
    if not args.tiny and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device here; use --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    device, start = torch.device("cpu" if args.tiny else "cuda"), time.perf_counter()
    stubbed = import_rltrain()
    from rltrain.trainer.model import Policy  # after the stand-in, where one is needed

    backends = ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") and not args.no_vllm else [])
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        saved = Path(tmp) if "vllm" in backends else None
        model, cfg = build_model(args.tiny, device, saved)
        name, peak = peak_tflops(device)
        ctx = dict(plan, device=device, cfg=cfg, counts=param_counts(model, cfg), peak=peak, name=name)
        # fused, as rltrain's own optimizer (rltrain/trainer/model.py)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        pad = SimpleNamespace(pad_token_id=0)  # all the trainer needs of a tokenizer
        ctx["policy"] = Policy(model, pad, opt, sched, device, next(model.parameters()).dtype)  # type: ignore[arg-type]
        ctx |= {"saved": saved, "deadline": start + (args.budget_s or plan["budget_s"])}
        trainer = [guarded(bench_trainer, ctx, seq, lay) for seq in plan["seq_lens"] for lay in LAYOUTS]
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the trainer's cached blocks: vLLM sizes itself by free memory
        rollout = [row for b in backends for row in bench_rollouts(ctx, b)]
    report = make_report(args.tiny, plan, ctx, trainer, rollout)
    report["device"]["rltrain_config_stub"] = stubbed
    report["elapsed_s"] = round(time.perf_counter() - start, 1)
    print_tables(report)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out} ({report['elapsed_s']} s)")
    errors = [r for r in trainer + rollout if "error" in r]
    if errors:
        print(f"bench_gpu: {len(errors)} row(s) failed: {[r['error'] for r in errors]}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
