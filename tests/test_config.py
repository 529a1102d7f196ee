import subprocess
import sys
from pathlib import Path

import pytest

from rltrain.config import ConfigError, load_config, parse_config, settle_auto

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
        ({"max_stepz": 3}, "max_stepz: unknown key — did you mean max_steps?"),
        ({"sampling": 3}, "sampling: must be a section ([sampling] or sampling = {...}), got 3"),
        ({"max_steps": {"x": 1}}, "max_steps: must be a value, not a section"),
        ({"env": {"id": "digits"}}, "env: must be a list of sections ([[env]] tables), got a section"),
        ({"env": "digits"}, "env: must be a list of sections ([[env]] tables), got 'digits'"),
        ({"env": ["digits"]}, "env.0: must be a [[env]] table, got 'digits'"),
        ({"env": [{"idd": "digits"}]}, "env.0.idd: unknown key — did you mean id?"),
        ({"algorithm": {"varient": "dapo"}}, "algorithm.varient: unknown key — did you mean variant?"),
        ({"zzz": 1}, "zzz: unknown key — see `python -m rltrain init` for every key"),
        ({"max_steps": "many"}, "max_steps: Input should be a valid integer"),
        ({"max_steps": -1}, "max_steps: Input should be greater than 0"),
        ({"sampling": {"max_tokenz": 3}}, "sampling.max_tokenz: unknown key"),
        ({"loss": "sft"}, "loss: only 'rl' is supported"),
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
    if patch == {"max_stepz": 3}:  # the typo, not its consequence (max_steps missing), is the error
        assert "more" not in str(err.value)


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
        (b"\x80\x81binary\xff", "not a UTF-8 text file (byte 0x80 at offset 0)"),
        ("model = 'caf\xe9'\n".encode("latin-1"), "not a UTF-8 text file (byte 0xe9 at offset 12)"),
        ("DIR", "cannot read: Is a directory"),
        ("OVERRIDE --=3", "override --: not a key"),
        ("OVERRIDE --sampling..x 1", "override --sampling..x: not a key"),
        ("OVERRIDE --max_steps.x 1", "max_steps.x: max_steps is not a section"),
        ("OVERRIDE --sampling {a=", "sampling: must be a section"),
        ("OVERRIDE --max_steps", "override --max_steps needs a value"),
    ],
)
def test_cli_exits_2_with_one_line(tmp_path: Path, text: str | bytes, needle: str) -> None:
    path, overrides = tmp_path / "c.toml", []
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif text == "DIR":
        path.mkdir()
    elif text.startswith("OVERRIDE"):
        path.write_text(
            "model = 'm'\nmax_steps = 1\nbatch_size = 8\nrollouts_per_example = 8\n[[env]]\nid = 'x'\n"
        )
        overrides = text.split()[1:]
    else:
        path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "rltrain", "--config", str(path), *overrides],
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


def test_max_async_level_auto_is_settled_by_the_trainers_device(tmp_path: Path, caplog) -> None:
    cfg = load_config(_write(tmp_path, HOSTED))
    assert cfg.max_async_level == "auto"
    with pytest.raises(RuntimeError, match="settled at the run's start"):
        _ = cfg.async_level
    with caplog.at_level("INFO", logger="rltrain"):
        assert settle_auto(cfg, "cpu").async_level == 0  # the engine shares the trainer's cores
        assert settle_auto(cfg, "cuda").async_level == 1
    assert [r.getMessage() for r in caplog.records] == [
        "notice: max_async_level auto -> 0 (the trainer is on CPU, where the engine shares its cores)",
        "notice: max_async_level auto -> 1 (the trainer is on cuda: sampling one step ahead of training)",
    ]
    explicit = load_config(_write(tmp_path, HOSTED), ["--max_async_level", "2"])
    assert settle_auto(explicit, "cpu").async_level == 2
    with pytest.raises(ConfigError, match="max_async_level"):
        load_config(_write(tmp_path, HOSTED), ["--max_async_level", "-1"])
