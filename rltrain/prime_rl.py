"""prime-rl's own `rl.toml` (the file `uv run rl @ rl.toml` reads), mapped onto rltrain's config.

A researcher leaving hosted training holds one of these. Every key is accounted for: mapped to its
rltrain meaning, announced as meaningless on one machine (one notice each), or refused as unknown,
naming it, so a misspelling is still an error. Both schema generations are read: LoRA under
`[trainer.model.experimental.lora]` (Dec 2025) or `[trainer.model.lora]`, `seq_len` at the top or under
`[orchestrator]`, `rollouts_per_example` or `group_size`, `[[orchestrator.env]]` or
`[[orchestrator.train.env]]`.
"""

from __future__ import annotations

from typing import Any

# Keys with no meaning for a local run: (dotted path prefix, why).
IGNORED = {
    "inference": "vLLM server settings: rltrain runs its own engine ([rollout] sets it)",
    "monitors": "remote monitors",
    "log": "prime-rl's log settings",
    "weight_broadcast": "weights reach rltrain's engine in process",
    "trainer.weight_broadcast": "weights reach rltrain's engine in process",
    "orchestrator.weight_broadcast": "weights reach rltrain's engine in process",
    "trainer.model.load_using_meta": "rltrain loads the model itself",
    "trainer.model.impl": "rltrain trains the transformers model",
    "trainer.model.attn": "attention implementation (transformers' default here)",
    "trainer.model.compile": "torch.compile settings",
    "trainer.model.ac": "activation checkpointing settings",
    "trainer.ckpt.weights": "rltrain's checkpoints hold the adapter",
    "inference_gpu_ids": "GPU placement of prime-rl's processes",
    "trainer_gpu_ids": "GPU placement of prime-rl's processes",
    "output_dir": "rltrain writes under run.output_dir",
    "clean": "prime-rl's output cleaning",
    "bench": "prime-rl's benchmark mode",
    "max_model_len": "inert in prime-rl too",
    "orchestrator.lora_name": "the adapter's name on prime-rl's server",
    "orchestrator.model.lora": "the adapter's name on prime-rl's server",
    "orchestrator.client": "rltrain talks to its own engine",
    "orchestrator.log": "prime-rl's log settings",
    "orchestrator.wandb": "Weights & Biases logging",
    "orchestrator.strict_async_level": "rltrain's async bound is always strict",
    "orchestrator.max_off_policy_steps": "rltrain never keeps a request past the async bound",
    "orchestrator.sampling.repetition_penalty": "not applied by rltrain's samplers",
    "orchestrator.sampling.min_tokens": "not applied by rltrain's samplers",
    "orchestrator.sampling.extra_body": "server request extras",
    "orchestrator.buffer": "prime-rl's difficulty buffer ([[pre_batch_filters]] zero_advantage is rltrain's)",
    "orchestrator.advantage": "rltrain's advantages: [algorithm] scale_rewards",
    "orchestrator.trajectory_strategy": "rltrain splits episodes only where the template forces it",
    "orchestrator.mask_env_responses": "rltrain always masks environment tokens",
    "orchestrator.model": "set [model] name instead",
    "trainer.model.name": "set [model] name instead",
    "trainer.tokenizer": "the model's own tokenizer is used",
    "orchestrator.seed": "[run] seed seeds rltrain's prompt order",
    "orchestrator.num_train_workers": "rltrain's ranks come from accelerate launch",
}


class _Mapper:
    """Walks the file, maps what has a local meaning, and collects notices and unknown keys."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.out: dict[str, Any] = {}
        self.notices: list[str] = []
        self.used: set[str] = set()

    def get(self, path: str) -> Any:
        node: Any = self.data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        self.used.add(path)
        return node

    def put(self, dotted: str, value: Any) -> None:
        if value is None:
            return
        node = self.out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def leftovers(self, node: Any = None, prefix: str = "") -> list[str]:
        """Dotted keys neither mapped nor ignored."""
        node = self.data if node is None else node
        out = []
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in self.used or any(path == p or path.startswith(p + ".") for p in IGNORED):
                continue
            if isinstance(value, dict) and value:
                out += self.leftovers(value, path + ".")
            elif not any(u.startswith(path + ".") for u in self.used):
                out.append(path)
        return out


def is_prime_rl(data: dict[str, Any]) -> bool:
    """prime-rl's shape: `[orchestrator]` / `[trainer]` sections, or `model` as a `[model] name` table."""
    return "orchestrator" in data or "trainer" in data or isinstance(data.get("model"), dict)


def _env(entry: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: entry[k] for k in ("id", "args", "name") if k in entry}
    for key in ("taskset", "harness", "agent"):  # the v1 shape of later prime-rl versions
        if key in entry:
            out[key] = entry[key]
    return out


def _eval(m: _Mapper, ev: dict[str, Any]) -> None:
    m.used.add("orchestrator.eval")
    m.put("eval.interval", ev.get("interval", 100))
    if ev.get("num_examples", -1) not in (-1, None):
        m.put("eval.num_examples", ev["num_examples"])
    m.put("eval.rollouts_per_example", ev.get("rollouts_per_example"))
    m.put("eval.eval_base_model", ev.get("eval_base_model"))  # translated once, by EvalConfig
    m.put("eval.skip_first_step", ev.get("skip_first_step"))
    envs = []
    for entry in ev.get("env", []):
        item = _env(entry) | {k: entry[k] for k in ("num_examples", "rollouts_per_example") if entry.get(k)}
        envs.append(item)
    if envs:
        m.put("eval.env", envs)
    for key in set(ev) - {
        "interval",
        "num_examples",
        "rollouts_per_example",
        "eval_base_model",
        "skip_first_step",
        "env",
    }:
        m.notices.append(f"orchestrator.eval.{key}: no local meaning; ignored")


def _trainer(m: _Mapper) -> None:
    m.put("learning_rate", m.get("trainer.optim.lr"))
    m.put("algorithm.weight_decay", m.get("trainer.optim.weight_decay"))
    m.put("algorithm.max_grad_norm", m.get("trainer.optim.max_norm"))
    b1, b2 = m.get("trainer.optim.betas1"), m.get("trainer.optim.betas2")
    if b1 is not None or b2 is not None:
        m.put("algorithm.betas", [b1 if b1 is not None else 0.9, b2 if b2 is not None else 0.999])
    optim_type = m.get("trainer.optim.type")
    if optim_type not in (None, "adamw"):
        raise ValueError(f"trainer.optim.type = {optim_type!r}: rltrain trains with AdamW")
    for base in ("trainer.model.lora", "trainer.model.experimental.lora"):
        for key in ("rank", "alpha", "dropout", "target_modules"):
            value = m.get(f"{base}.{key}")
            m.put(f"lora.{key}", int(value) if key == "alpha" and value is not None else value)
    kind = m.get("trainer.scheduler.type")
    if kind is not None:
        m.put("algorithm.lr_schedule", kind)
        m.put("algorithm.warmup_steps", m.get("trainer.scheduler.warmup_steps"))
    ratio = m.get("trainer.loss.ratio_type")
    if ratio == "sequence":
        m.put("algorithm.variant", "gspo")
    loss = m.data.get("trainer", {}).get("loss", {})
    for key in set(loss) - {"ratio_type"}:
        m.notices.append(f"trainer.loss.{key}: prime-rl's masking knob; rltrain's are under [algorithm]")
        m.used.add(f"trainer.loss.{key}")


def _wandb(m: _Mapper) -> None:
    """`[wandb]`: project, name, entity, tags, offline map to rltrain's [wandb]; other keys are noted."""
    section = m.data.get("wandb")
    if not isinstance(section, dict):
        return
    keys = ("project", "name", "entity", "tags", "offline")
    m.put("wandb", {k: m.get(f"wandb.{k}") for k in keys if k in section})
    for key in sorted(set(section) - set(keys)):
        m.notices.append(f"wandb.{key}: prime-rl's W&B knob; rltrain's are under [wandb]; ignored")
        m.used.add(f"wandb.{key}")


def translate(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """rltrain's raw config for a prime-rl rl.toml, and the notices (one per ignored key)."""
    m = _Mapper(data)
    m.put("model", m.get("model.name"))
    m.put("max_steps", m.get("max_steps") or m.get("orchestrator.max_steps") or m.get("trainer.max_steps"))
    m.put("seq_len", m.get("seq_len") or m.get("orchestrator.seq_len"))
    m.get("trainer.model.seq_len")
    m.put("max_async_level", m.get("max_async_level") or m.get("orchestrator.max_async_level"))
    m.get("trainer.max_async_level")
    m.put("batch_size", m.get("orchestrator.batch_size") or 128)
    m.put(
        "rollouts_per_example",
        m.get("orchestrator.rollouts_per_example") or m.get("orchestrator.group_size") or 1,
    )
    m.put("oversampling_factor", m.get("orchestrator.oversampling_factor"))
    m.put("max_inflight_rollouts", m.get("orchestrator.max_concurrent"))
    sampling = m.get("orchestrator.sampling") or m.get("orchestrator.train.sampling") or {}
    max_tokens = sampling.get("max_tokens") or sampling.get("max_completion_tokens")
    m.put("sampling.max_tokens", max_tokens)
    m.put("sampling.temperature", sampling.get("temperature"))
    for key in set(sampling) - {"max_tokens", "max_completion_tokens", "temperature"}:
        m.notices.append(f"orchestrator.sampling.{key}: not applied by rltrain's samplers; ignored")
    envs = m.get("orchestrator.env") or m.get("orchestrator.train.env") or [{"id": "reverse-text"}]
    m.put("env", [_env(e) for e in envs])
    ev = m.data.get("orchestrator", {}).get("eval")
    if isinstance(ev, dict):
        _eval(m, ev)
    val = m.get("orchestrator.val")
    if isinstance(val, dict):
        m.put("val", {k: val[k] for k in ("interval", "num_examples", "rollouts_per_example") if k in val})
    _trainer(m)
    _wandb(m)
    ckpt = m.get("ckpt")
    if isinstance(ckpt, dict):
        m.put("checkpoints.interval", ckpt.get("interval") or 0)
        m.put("checkpoints.keep_last", ckpt.get("keep") or ckpt.get("keep_last"))
        for key in set(ckpt) - {"interval", "keep", "keep_last"}:
            m.notices.append(f"ckpt.{key}: prime-rl's resume knob; rltrain resumes with --resume RUN_DIR")
    for path in sorted(p for p in IGNORED if m.get(p) is not None):
        m.notices.append(f"{path}: {IGNORED[path]}; ignored")
    unknown = m.leftovers()
    if unknown:
        raise ValueError(
            f"{unknown[0]}: unknown key in a prime-rl config"
            + (f" (+{len(unknown) - 1} more)" if len(unknown) > 1 else "")
        )
    return m.out, m.notices
