"""The run's writer: the record (run.json), metrics.jsonl, rollouts/step_N.jsonl, TensorBoard, usage.

Only the main rank writes; every rank keeps the same counters, and the status in memory decides the
other ranks' exit codes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rltrain.distributed import Dist
from rltrain.record import RunRecord, append_jsonl, truncate_jsonl

CURVES_SPACING = 50.0  # during a run, curves are redrawn after at least 50x the last drawing's time
FIRST_PLOT_S = 0.5  # the first drawing's cost, matplotlib's import included (~0.5 s of CPU here)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    training_tokens: int = 0
    device_seconds: float = 0.0  # wall time of the run; cost multiplies it by the number of devices

    def as_record(self, price_per_hour: float, devices: int) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "training_tokens": self.training_tokens,
            "cost_usd": round(self.device_seconds / 3600.0 * devices * price_per_hour, 6),
        }


@dataclass
class Recorder:
    run_dir: Path
    record: RunRecord
    dist: Dist = field(default_factory=Dist)
    price_per_device_hour: float = 0.0
    usage: Usage = field(default_factory=Usage)
    checkpoints: list[str] = field(default_factory=list)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    # kept in the record's metrics beside the latest row's (the guards' events of the whole run)
    run_metrics: dict[str, Any] = field(default_factory=dict)
    writer: Any = None  # TensorBoard's SummaryWriter, when on
    loggers: list[Any] = field(default_factory=list)  # rltrain.wandb_log.StepLogger, main rank only
    _clock: float = field(default_factory=time.monotonic)
    _plotted_step: int | None = None  # the last step curves.png shows
    _plotted_at: float = field(default_factory=time.monotonic)  # the last drawing (at first: the start)
    _plot_s: float = FIRST_PLOT_S  # how long that drawing took

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def status(self) -> str:
        return self.record.status

    def open_tensorboard(self) -> None:
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def tick(self) -> None:
        """Add the wall time since the last tick to device-seconds (the cost basis)."""
        now = time.monotonic()
        self.usage.device_seconds += now - self._clock
        self._clock = now

    def count(self, input_tokens: float, output_tokens: float, training_tokens: float) -> None:
        self.usage.input_tokens += int(input_tokens)
        self.usage.output_tokens += int(output_tokens)
        self.usage.training_tokens += int(training_tokens)

    def log_step(self, step: int, metrics: dict[str, Any], rollout_records: list[dict[str, Any]]) -> None:
        """One step's metrics row, its rollouts file, TensorBoard scalars and the record."""
        self.tick()
        self.last_metrics = {"step": step, **metrics}
        if not self.dist.is_main:
            return
        append_jsonl(self.metrics_path, self.last_metrics)
        if rollout_records:
            (self.run_dir / "rollouts").mkdir(exist_ok=True)
            # default=str: a record now holds its prompt, whose values the dataset chose
            text = "".join(json.dumps(r, default=str) + "\n" for r in rollout_records)
            (self.run_dir / "rollouts" / f"step_{step}.jsonl").write_text(text)
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()
        self.save()
        for logger in self.loggers:
            logger.log_step(step, self.last_metrics, rollout_records, self.record.data)

    def save(self, durable: bool = False) -> None:
        if self.dist.is_main:
            usage = self.usage.as_record(self.price_per_device_hour, devices=self.dist.world)
            metrics = {**self.last_metrics, **self.run_metrics}
            self.record.update(metrics, usage, self.checkpoints, durable=durable)

    def set_status(self, status: str, error: str | None = None) -> None:
        if self.dist.is_main:
            self.record.set_status(status, error=error)
            for logger in self.loggers:
                logger.status(self.record.data)
        else:
            self.record.data["status"] = status

    def finish(self, status: str, error: str | None = None) -> None:
        self.tick()
        self.save()
        if self.writer is not None:
            self.writer.close()
        self.set_status(status, error=error)

    def write_curves(self) -> None:
        """runs/<id>/curves.png (main rank): at checkpoints and at the end of the run. Drawing takes
        ~0.3 s of CPU (the first ~0.5 s): during the run, a checkpoint draws only once the time since
        the last drawing (or the run's start) is CURVES_SPACING times what drawing takes, so at most
        ~2% of the run's time (on the tiny demo, drawing at every checkpoint was a third of the
        trainer's time). A run's end always draws, unless its final checkpoint just did."""
        step = self.last_metrics.get("step")
        if not self.dist.is_main or (step is not None and step == self._plotted_step):
            return
        now = time.monotonic()
        if self.record.status == "running" and now - self._plotted_at < CURVES_SPACING * self._plot_s:
            return
        from rltrain.plots import write_curves

        write_curves(self.run_dir)
        self._plotted_step, self._plotted_at = step, time.monotonic()
        self._plot_s = self._plotted_at - now

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps of the counters."""
        return {"usage": asdict(self.usage), "last_metrics": self.last_metrics}

    def load_state_dict(self, state: dict[str, Any], step: int, checkpoints: list[str]) -> None:
        """Back to a checkpoint at `step`: its counters, and metrics rows past it dropped."""
        self.usage = Usage(**state["usage"])
        self.last_metrics = state.get("last_metrics", {})
        self.checkpoints = checkpoints
        if self.dist.is_main:
            truncate_jsonl(self.metrics_path, step)
