"""`[wandb]`: a real W&B run in offline mode, read back from its files: every metrics row, the config,
status and usage, eval and rollout tables; a resume continues the same W&B run; no wandb package is one
line naming the extra."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import pytest

from rltrain.config import WandbConfig, parse_config
from rltrain.prime_rl import translate
from rltrain.record import read_jsonl
from rltrain.run import train
from rltrain.rundir import stored_config
from rltrain.wandb_log import open_loggers
from tests.wandb_files import offline_runs

pytest.importorskip("wandb")


def test_offline_run_logs_rows_config_status_tables_and_resumes(run_config: Any, tmp_path: Path) -> None:
    raw = run_config(
        max_steps=2,
        checkpoints={"interval": 2},
        eval={"interval": 2, "num_examples": 4, "rollouts_per_example": 2},
        wandb={
            "project": "rltrain-test",
            "tags": ["t"],
            "offline": True,
            "rollout_interval": 2,
            "rollout_rows": 3,
        },
        run__id="wb",
    )
    run_dir = train(parse_config(raw)).run_dir
    (first,) = offline_runs(run_dir, expect=1)
    rows = [r for r in first["history"] if "reward_mean" in r]
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [r["step"] for r in metrics if "reward_mean" in r] == [1, 2]
    assert rows[1]["reward_mean"] == pytest.approx(metrics[-1]["reward_mean"])
    assert rows[1]["usage/output_tokens"] > 0
    # avg@2 and pass@2 of the base model (step 0) and of step 2
    assert "eval/digits/avg@2" in rows[1] and rows[1]["eval/table/nrows"] == 4
    assert rows[1]["rollouts/nrows"] == 3 and "rollouts/nrows" not in rows[0]
    assert first["config"]["max_steps"] == 2 and first["config"]["wandb"]["project"] == "rltrain-test"
    assert first["summary"]["status"] == "succeeded"
    table = json.loads(
        next(run_dir.glob("wandb/offline-run-*/files/media/table/rollouts_*.json")).read_text()
    )
    assert table["columns"][:4] == ["step", "env", "group", "reward"]
    assert "user:" in table["data"][0][5]  # the prompt, as chat text

    resumed = train(stored_config(run_dir, ["--max_steps", "3"]), resume=run_dir)
    assert resumed.status == "succeeded"
    runs = offline_runs(run_dir, expect=2)
    assert len(runs) == 2 and runs[1]["id"] == first["id"] == (run_dir / "wandb_id").read_text()
    assert [r["step"] for r in runs[1]["history"] if "reward_mean" in r] == [3]


def test_only_the_main_rank_logs(tmp_path: Path) -> None:
    assert open_loggers(WandbConfig(offline=True), tmp_path, {}, is_main=False) == []
    assert open_loggers(None, tmp_path, {}, is_main=True) == []
    assert not (tmp_path / "wandb").exists()


def test_missing_wandb_is_one_line_naming_the_extra(run_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_wandb(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(
        ImportError, match=r"^\[wandb\] needs the wandb package: pip install 'rltrain\[wandb\]'$"
    ):
        train(parse_config(run_config(max_steps=1, wandb={"project": "p"})))


def test_prime_rl_wandb_section_maps() -> None:
    data, notices = translate(
        {
            "model": {"name": "builtin:tiny"},
            "wandb": {"project": "p", "name": "n", "log_extras": {"samples": True}},
        }
    )
    assert data["wandb"] == {"project": "p", "name": "n"}
    assert notices == ["wandb.log_extras: prime-rl's W&B knob; rltrain's are under [wandb]; ignored"]
