"""The commented starter config written by `python -m rltrain init`."""

STARTER_CONFIG = """\
# rltrain config — the shape `prime train init` writes, plus rltrain's own sections.
# Every key is checked: a misspelling is an error that names it.

model = "builtin:tiny"          # registry name (python -m rltrain models), hub id, local dir, or builtin:tiny
loss = "rl"                     # only "rl" is supported
max_steps = 50
batch_size = 32                 # rollouts per step = prompts per step x rollouts_per_example
rollouts_per_example = 8        # GRPO group size
learning_rate = 1e-2            # LoRA learning rate (1e-2 suits the tiny model; ~1e-5..1e-4 real models)
# lora_alpha = 32               # LoRA scaling (default 2 x rank)
# max_inflight_rollouts = 64    # cap on sequences sampled at once
# env_files = ["secrets.env"]   # KEY=VALUE lines loaded into the environment's process, never recorded
# checkpoint_id = "runs/ID/checkpoints/step_50"   # warm start from a local adapter checkpoint

[sampling]
max_tokens = 32
temperature = 1.0
# top_p = 1.0
# enable_thinking = false       # chat-template switch (Qwen3.5, Nemotron)
# reasoning_effort = "low"      # chat-template switch (gpt-oss)

[[env]]
id = "digits"                   # built-in name, module, owner/name slug, or path/to/env.py
args = {}
# ratio = 1.0                   # share of prompts when several [[env]] train together

# [eval]
# interval = 10
# num_examples = 32
# rollouts_per_example = 4

# [[pre_batch_filters]]
# type = "zero_advantage"       # drop groups whose rewards are all equal

[checkpoints]
interval = 10                   # 0 = only at the end
# keep_last = 3

# [adapters]
# interval = 10                 # standalone adapter copies in runs/ID/adapters/step_N
# keep_last = 3

[lora]
rank = 16
# alpha = 32
# dropout = 0.0
# target_modules = ["q_proj", "v_proj"]   # default: the model family's projections

[algorithm]
variant = "grpo"                # grpo | dr_grpo | dapo
# scale_rewards = true          # divide advantages by the group std (dr_grpo: false)
# clip_eps_low = 0.2
# clip_eps_high = 0.28          # clip-higher (dapo default)
# kl_coef = 0.0                 # k3 KL to the base model (adapter disabled)
# micro_batch_size = 8
# max_grad_norm = 1.0
# [algorithm.mismatch]
# mode = "token"                # token | sequence | none: trainer/inference importance correction
# cap = 2.0

[rollout]
backend = "auto"                # auto (vllm when installed) | vllm | hf
# gpu_memory_utilization = 0.5
# tensor_parallel_size = 1
# enable_sleep_mode = false
# cpu_kv_cache_gib = 0.25

# [fsdp]                        # shard the trainer over the ranks (accelerate launch, several GPUs)
# enabled = false
# reshard_after_forward = true
# cpu_offload = false

[run]
output_dir = "runs"
# id = "my-run"
# team_id = "my-team"
seed = 0

[usage]
price_per_device_hour = 0.0     # cost_usd = device-hours x this
"""
