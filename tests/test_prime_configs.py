"""Configs from Prime's tooling run unchanged: prime-rl's own rl.toml (both LoRA schema generations, the
reverse_text example's shape) and the `prime train init` template with its optional blocks on.

The TOML below is written for these tests from the documented key sets of prime-rl's
examples/reverse_text/rl.toml and rl_lora.toml and of the prime CLI's templates; only the model (a
local one) and the run's size are changed, through the same dotted overrides a user would type.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rltrain.__main__ import main
from rltrain.config import ConfigError, load_config
from rltrain.record import read_jsonl
from rltrain.run import train
from tests.helpers import valid_record

# the reverse_text example: full fine-tune shape (rltrain trains LoRA: lr is the only optimizer key)
RL_TOML = """max_steps = 20

[model]
name = "builtin:tiny"

[orchestrator]
batch_size = 128
rollouts_per_example = 16
seq_len = 2048

[orchestrator.sampling]
max_tokens = 128

[[orchestrator.env]]
id = "reverse-text"

[trainer.optim]
lr = 3e-6

[inference]"""
# the same run with LoRA, in the December-2025 schema (experimental.lora, load_using_meta, ...)
RL_LORA_TOML = """max_steps = 20

[model]
name = "builtin:tiny"

[trainer.model]
load_using_meta = true

[orchestrator]
batch_size = 128
rollouts_per_example = 16
seq_len = 2048
lora_name = "r8-32"

[trainer.weight_broadcast]
adapter_only = true

[trainer.model.experimental.lora]
rank = 8
alpha = 32
dropout = 0.0
target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

[orchestrator.sampling]
max_tokens = 128

[[orchestrator.env]]
id = "reverse-text"

[trainer.optim]
lr = 1e-4

[inference]
enable_lora = true
"""
SMALL = [
    "--max_steps",
    "2",
    "--batch_size",
    "16",
    "--rollouts_per_example",
    "8",
    "--sampling.max_tokens",
    "12",
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_prime_rl_rl_toml_maps_and_announces(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="rltrain"):
        cfg = load_config(_write(tmp_path, "rl_lora.toml", RL_LORA_TOML))
    assert (cfg.model, cfg.max_steps, cfg.batch_size, cfg.rollouts_per_example) == (
        "builtin:tiny",
        20,
        128,
        16,
    )
    assert cfg.seq_len == 2048 and cfg.sampling.max_tokens == 128 and cfg.learning_rate == 1e-4
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.dropout) == (8, 32, 0.0) and len(
        cfg.lora.target_modules
    ) == 7
    assert [e.id for e in cfg.env] == ["reverse-text"]
    notices = [r.getMessage() for r in caplog.records if "prime-rl" in r.getMessage()]
    for key in (
        "inference",
        "trainer.weight_broadcast",
        "trainer.model.load_using_meta",
        "orchestrator.lora_name",
    ):
        assert sum(key + ":" in n for n in notices) == 1, (key, notices)  # one notice each
    full = load_config(_write(tmp_path, "rl.toml", RL_TOML))
    assert full.learning_rate == 3e-6 and full.lora.rank == 16  # rltrain trains LoRA: its default rank


def test_newer_prime_rl_schema_and_misspellings(tmp_path: Path) -> None:
    newer = RL_LORA_TOML.replace("experimental.lora", "lora").replace("seq_len = 2048\n", "")
    newer = "seq_len = 1024\n" + newer.replace("rollouts_per_example", "group_size")
    cfg = load_config(_write(tmp_path, "new.toml", newer))
    assert cfg.seq_len == 1024 and cfg.lora.rank == 8 and cfg.rollouts_per_example == 16
    with pytest.raises(ConfigError, match="orchestrator.batch_sise: unknown key in a prime-rl config"):
        load_config(_write(tmp_path, "typo.toml", RL_TOML.replace("batch_size", "batch_sise")))
    with pytest.raises(ConfigError, match="trainer.optim.lrr: unknown key"):
        load_config(_write(tmp_path, "typo2.toml", RL_TOML.replace("lr =", "lrr =")))


@pytest.mark.parametrize("text", [RL_TOML, RL_LORA_TOML], ids=["rl", "rl_lora"])
def test_prime_rl_examples_train(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "rl.toml", text)
    cfg = load_config(path, [*SMALL, "--run.output_dir", str(tmp_path / "runs"), "--run.progress", "false"])
    run = train(cfg)
    record = valid_record(run.run_dir)
    assert record["status"] == "succeeded" and record["environment"] == "reverse-text"
    honoured = record["config"]  # what was honoured, in rltrain's own terms
    assert honoured["seq_len"] == 2048 and honoured["learning_rate"] == cfg.learning_rate
    assert len(read_jsonl(run.run_dir / "metrics.jsonl")) == 2


def test_init_prime_rl_writes_that_shape(tmp_path: Path) -> None:
    out = tmp_path / "rl.toml"
    assert main(["init", "--prime-rl", str(out)]) == 0
    cfg = load_config(out)
    assert cfg.model == "builtin:smollm2" and cfg.seq_len == 512 and cfg.lora.rank == 16


# `prime train init`'s template (0.6.12 shape, then 0.6.18 additions), optional blocks uncommented;
# environment ids that need the Hub are swapped for built-ins.
TEMPLATE = """model = "builtin:tiny"
loss = "rl"
max_steps = 100
env_files = ["secrets.env"]
batch_size = 128
rollouts_per_example = 8
max_inflight_rollouts = 96
learning_rate = 3e-5

[sampling]
max_tokens = 2048
temperature = 0.7

[[env]]
id = "primeintellect/reverse-text"

[[env]]
id = "digits"
args = { num_examples = 100 }

[eval]
interval = 100
num_examples = -1
rollouts_per_example = 1
EVAL_FIRST

[[eval.env]]
id = "digits"
args = { seed = 3 }
num_examples = 30
rollouts_per_example = 4

[val]
num_examples = 64
rollouts_per_example = 1
interval = 5

[[pre_batch_filters]]
type = "zero_advantage"
enforce = true

[checkpoints]
interval = 100
keep_cloud = 5

[adapters]
interval = 0
keep_last = 3
"""


@pytest.mark.parametrize(
    "first", ["eval_base_model = true", "skip_first_step = false"], ids=["0.6.12", "0.6.18"]
)
def test_prime_train_init_template_runs(tmp_path: Path, first: str, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "secrets.env").write_text("JUDGE_TOKEN=abc\n")
    text = TEMPLATE.replace("EVAL_FIRST", first)  # num_examples = -1: every held-out row
    if first.startswith("eval_base_model"):
        text += "\n[buffer]\neasy_threshold = 1.0\nonline_difficulty_filtering = false\n"
    path = _write(tmp_path, "prime.toml", text)
    small = ["--batch_size", "16", "--max_inflight_rollouts", "16", "--sampling.max_tokens", "8"]
    cfg = load_config(
        path, [*small, "--max_steps", "2", "--eval.interval", "2", "--run.output_dir", str(tmp_path / "runs")]
    )
    assert cfg.eval is not None and cfg.eval.skip_first_step is False and cfg.eval.env[0].num_examples == 30
    with caplog.at_level(logging.INFO, logger="rltrain"):
        run = train(cfg, config_dir=tmp_path)
    assert valid_record(run.run_dir)["status"] == "succeeded"
    rows = read_jsonl(run.run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2]  # step 0: the base model's eval (skip_first_step = false)
    # [[eval.env]] digits has other args than the training digits: evaluated apart, by its own sizes
    evals = {f"eval/digits@eval/{m}@4{bound}" for m in ("avg", "pass") for bound in ("", "/lo", "/hi")}
    assert set(rows[0]) == {"step", *evals}  # each with its interval
    assert "eval/digits@eval/avg@4" in rows[2]
    messages = " ".join(r.getMessage() for r in caplog.records)
    if first.startswith("eval_base_model"):
        assert "eval_base_model is deprecated: translating to skip_first_step = false" in messages
        assert "`buffer` has no meaning for a local run" in messages
    assert "`checkpoints.keep_cloud` has no meaning for a local run" in messages
