import subprocess
import sys
from pathlib import Path

import pytest

from rltrain.config import ConfigError, load_config, parse_config

HOSTED = """
model = "Qwen/Qwen3.5-0.8B"
loss = "rl"
max_steps = 100
batch_size = 128
rollouts_per_example = 8
learning_rate = 1e-4
lora_alpha = 32
max_inflight_rollouts = 64
env_files = ["secrets.env"]
oversampling_factor = 2.0

[sampling]
max_tokens = 2048
temperature = 1.0
enable_thinking = false

[[env]]
id = "primeintellect/reverse-text"
args = {}

[eval]
interval = 10
num_examples = 16
rollouts_per_example = 4

[val]
num_examples = 8

[[pre_batch_filters]]
type = "zero_advantage"

[checkpoints]
interval = 50
keep_cloud = 2

[adapters]
interval = 25
keep_last = 2
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_hosted_config_parses_unchanged(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, HOSTED))
    assert cfg.prompts_per_step == 16
    assert cfg.effective_lora_alpha == 32
    assert cfg.pre_batch_filters[0].type == "zero_advantage"
    assert cfg.hosted_only_keys_set() == ["oversampling_factor", "checkpoints.keep_cloud"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"max_stepz": 3}, "max_stepz: unknown key"),
        ({"max_steps": "many"}, "max_steps: Input should be a valid integer"),
        ({"max_steps": -1}, "max_steps: Input should be greater than 0"),
        ({"sampling": {"max_tokenz": 3}}, "sampling.max_tokenz: unknown key"),
        ({"loss": "sft"}, "loss: Value error, only 'rl' is supported"),
        ({"batch_size": 12}, "batch_size (12) must be a multiple of rollouts_per_example (8)"),
    ],
)
def test_bad_configs_name_the_field(patch: dict, message: str) -> None:
    data = {
        "model": "m",
        "max_steps": 1,
        "batch_size": 16,
        "rollouts_per_example": 8,
        "env": [{"id": "digits"}],
    }
    data.update(patch)
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_model() -> None:
    with pytest.raises(ConfigError, match="model: required key is missing"):
        parse_config({"max_steps": 1, "batch_size": 8, "rollouts_per_example": 8, "env": [{"id": "x"}]})


def test_dotted_overrides(tmp_path: Path) -> None:
    cfg = load_config(
        _write(tmp_path, HOSTED),
        ["--max_steps", "5", "--sampling.max_tokens=16", "--algorithm.variant", "dapo", "--run.id", "abc"],
    )
    assert (cfg.max_steps, cfg.sampling.max_tokens, cfg.algorithm.variant, cfg.run.id) == (
        5,
        16,
        "dapo",
        "abc",
    )
    assert cfg.algorithm.eps_high == 0.28
    with pytest.raises(ConfigError, match="sampling.max_tokenz: unknown key"):
        load_config(_write(tmp_path, HOSTED), ["--sampling.max_tokenz", "3"])


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "model = 'm'\nmax_steps = -3\nbatch_size = 8\nrollouts_per_example = 8\n[[env]]\nid = 'x'\n",
            "max_steps: Input should be greater than 0",
        ),
        (
            "model = 'm'\nmax_steps = 1\nbatch_size = 8\nrollouts_per_example = 8\n"
            "[[env]]\nid = 'x'\nbogus = 1\n",
            "env.0.bogus: unknown key",
        ),
        ("model = \n", "invalid TOML"),
    ],
)
def test_cli_exits_2_with_one_line(tmp_path: Path, text: str, needle: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rltrain", "--config", str(_write(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_init_writes_a_valid_starter(tmp_path: Path) -> None:
    out = tmp_path / "new.toml"
    proc = subprocess.run([sys.executable, "-m", "rltrain", "init", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0
    cfg = load_config(out)
    assert cfg.model == "builtin:tiny" and cfg.env[0].id == "digits"
