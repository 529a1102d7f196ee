"""Host memory per rank when two processes load a model: replicated, FSDP, FSDP with rank-0 loading off.

Builds a random Qwen3 of about 0.4 B parameters (fp32, ~1.6 GB on disk; the tiny model's tokenizer),
then launches two gloo processes per mode with accelerate. Each rank reports its peak resident memory
after `load_policy` and what it holds in parameters. Writes docs/bench_fsdp_memory.json.

    .venv/bin/python scripts/bench_fsdp_memory.py            # ~2 minutes on 2 cores
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH = "-m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1"
LAUNCH += " --mixed_precision no --dynamo_backend no"

WORKER = """
import json, resource, sys
import torch
from rltrain.config import FsdpConfig, parse_config
from rltrain.distributed import Dist
from rltrain.trainer.model import load_policy
from rltrain.trainer.fsdp import full

path, mode = sys.argv[1], sys.argv[2]
cfg = parse_config({"model": path, "max_steps": 1, "batch_size": 2, "rollouts_per_example": 2,
                    "env": [{"id": "digits"}], "run": {"dtype": "float32"}})
dist = Dist()
device = dist.init("cpu")
shard = {"replicated": None, "fsdp": FsdpConfig(enabled=True)}[mode]
policy = load_policy(cfg, path, device=device, shard=shard)
local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in policy.model.parameters())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
rows = dist.all_gather({"rank": dist.rank, "peak_rss_gib": round(peak, 3), "local_params": local})
if dist.is_main:
    print("RESULT " + json.dumps(rows))
dist.close()
"""


def build_model(out: Path) -> int:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from rltrain.tiny import tiny_model_path

    tiny = tiny_model_path("qwen3")
    config = Qwen3Config.from_pretrained(tiny)
    layers = 24
    config.update(
        {
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": layers,
            "layer_types": ["full_attention"] * layers,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 64,
        }
    )
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(out)
    for f in tiny.iterdir():  # tokenizer, chat template, generation config
        if f.name not in {"config.json", "model.safetensors"}:
            shutil.copy(f, out / f.name)
    return sum(p.numel() for p in model.parameters())


def run(model: Path, mode: str, script: Path) -> list[dict[str, float]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, *LAUNCH.split(), str(script), str(model), mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return list(json.loads(line[7:]))
    raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-3000:])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        model, script = Path(tmp) / "model", Path(tmp) / "worker.py"
        params = build_model(model)
        script.write_text(WORKER)
        size_gib = sum(f.stat().st_size for f in model.glob("*.safetensors")) / 2**30
        result = {"params": params, "checkpoint_gib": round(size_gib, 3)}
        for mode in ("replicated", "fsdp"):
            result[mode] = run(model, mode, script)
    out = REPO / "docs" / "bench_fsdp_memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
