"""Weights & Biases logging for `[wandb]`: every metrics row, the config, the record's status and usage,
eval tables, and a table of sample rollouts every `rollout_interval` steps.

The recorder calls a run's loggers (`StepLogger`) after it has written each step and at each status
change; only the main rank opens one. The W&B run's id is kept in runs/<id>/wandb_id, so a resumed run
(`--resume`) continues the same W&B run. A resume replays the steps after its checkpoint: W&B's own
`_step` only grows, so every row carries the training `step`, and charts use it as their x axis
(`define_metric`). `wandb` is imported here only: it is an extra (`pip install 'rltrain[wandb]'`).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any, Protocol

from rltrain.config_sections import WandbConfig

ID_FILE = "wandb_id"
MISSING = "[wandb] needs the wandb package: pip install 'rltrain[wandb]'"
# <prefix>/<env>/<avg|pass>@k, as orchestrator/evals.py writes them (with /lo and /hi: the 95% interval)
EVAL_KEY = re.compile(r"^(eval|val)/(.+)/((?:avg|pass)@\d+)$")
TERMINAL = ("succeeded", "failed", "cancelled")
SAMPLE_COLUMNS = ["step", "env", "group", "reward", "advantage", "prompt", "completion", "finish"]


class StepLogger(Protocol):
    """What the recorder calls; `record` is the run record as just written (run.json's content)."""

    def log_step(
        self, step: int, metrics: dict[str, Any], rollouts: list[dict[str, Any]], record: dict[str, Any]
    ) -> None: ...

    def status(self, record: dict[str, Any]) -> None: ...


def _text(value: Any) -> str:
    """A prompt or a completion as table text: chat messages one per line, `role: content`."""
    if isinstance(value, list):
        return "\n".join(
            f"{m.get('role', '?')}: {m.get('content', '')}" for m in value if isinstance(m, dict)
        )
    return "" if value is None else str(value)


class WandbLogger:
    """One W&B run for one rltrain run (main rank only)."""

    def __init__(self, cfg: WandbConfig, run_dir: Path, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise ImportError(MISSING) from None
        self.wandb: Any = wandb  # typed loosely: wandb's stubs move between releases
        self.cfg = cfg
        id_file = run_dir / ID_FILE
        # W&B run ids: lowercase letters and digits
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        try:
            self.run = self._init(run_id, run_dir, config)
        except self.wandb.errors.UsageError as err:  # no API key, a bad entity...: one line, with a way out
            raise RuntimeError(f"[wandb]: {err} (or set [wandb] offline = true)") from None
        id_file.write_text(self.run.id)
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.eval_rows: list[list[Any]] = []

    def _init(self, run_id: str, run_dir: Path, config: dict[str, Any]) -> Any:
        cfg = self.cfg
        mode = "offline" if cfg.offline else os.environ.get("WANDB_MODE") or None
        return self.wandb.init(
            project=cfg.project,
            name=cfg.name or run_dir.name,
            entity=cfg.entity,
            tags=cfg.tags or None,
            config=config,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=mode,
            settings=self.wandb.Settings(console="off", silent=True),
        )

    def log_step(
        self, step: int, metrics: dict[str, Any], rollouts: list[dict[str, Any]], record: dict[str, Any]
    ) -> None:
        row: dict[str, Any] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        row |= {f"usage/{k}": v for k, v in (record.get("usage") or {}).items()}
        row["step"] = step
        evals = [
            [step, *m.groups(), v, row.get(f"{k}/lo"), row.get(f"{k}/hi")]
            for k, v in row.items()
            if (m := EVAL_KEY.match(k))
        ]
        if evals:  # the whole table again: W&B shows a logged table as it was at that step
            self.eval_rows += evals
            row["eval/table"] = self.wandb.Table(
                columns=["step", "kind", "env", "metric", "value", "lo", "hi"], data=self.eval_rows
            )
        every = self.cfg.rollout_interval
        if rollouts and every and step % every == 0:
            row["rollouts"] = self.wandb.Table(columns=SAMPLE_COLUMNS, data=self._samples(step, rollouts))
        self.run.log(row)
        self.run.summary["status"] = record.get("status")

    def _samples(self, step: int, rollouts: list[dict[str, Any]]) -> list[list[Any]]:
        rows = []
        for r in rollouts[: self.cfg.rollout_rows]:
            completion = _text(r["messages"]) if "messages" in r else _text(r.get("completion"))
            rows.append(
                [
                    step,
                    r.get("env"),
                    r.get("group"),
                    r.get("reward"),
                    r.get("advantage"),
                    _text(r.get("prompt")),
                    completion,
                    r.get("finish"),
                ]  # fmt: skip
            )
        return rows

    def status(self, record: dict[str, Any]) -> None:
        status = str(record.get("status"))
        self.run.summary["status"] = status
        for key, value in (record.get("usage") or {}).items():
            self.run.summary[f"usage/{key}"] = value
        if record.get("error"):
            self.run.summary["error"] = record["error"]
        if status in TERMINAL:
            self.run.finish(exit_code=0 if status == "succeeded" else 1)


def open_loggers(cfg: WandbConfig | None, run_dir: Path, config: dict[str, Any], is_main: bool) -> list[Any]:
    """The run's step loggers: a W&B run when `[wandb]` is set, on the main rank only."""
    if cfg is None or not is_main:
        return []
    return [WandbLogger(cfg, run_dir, config)]
