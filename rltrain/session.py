"""Everything a run holds between steps: run dir, record, sampler, counters — and who may write.

`run.py` drives it; this module owns the bookkeeping so the loop itself stays short. Only the main
rank writes (record, metrics, rollouts, TensorBoard, checkpoints); every rank keeps the same counters.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rltrain import checkpoint as ckpt
from rltrain.adapters import export_adapter
from rltrain.config import Config
from rltrain.data import EnvSlot, PromptSampler
from rltrain.distributed import Dist
from rltrain.envs.scoring import Scorer
from rltrain.families import checkpoint_model_type
from rltrain.models import resolve_model_path
from rltrain.progress import Progress
from rltrain.record import RunRecord, append_jsonl, truncate_jsonl
from rltrain.rundir import StopFlag, build_slots, latest_for_resume, open_run_dir
from rltrain.trainer.model import Policy


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
class Session:
    cfg: Config
    run_dir: Path
    record: RunRecord
    slots: list[EnvSlot]
    sampler: PromptSampler
    dist: Dist = field(default_factory=Dist)
    start_step: int = 0
    usage: Usage = field(default_factory=Usage)
    checkpoints: list[str] = field(default_factory=list)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    stop: StopFlag = field(default_factory=StopFlag)
    writer: Any = None
    nonfinite_skips: int = 0
    consecutive_skips: int = 0
    lock: IO[str] | None = None
    _clock: float = field(default_factory=time.monotonic)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def tick(self) -> None:
        """Add the wall time since the last tick to device-seconds (the cost basis)."""
        now = time.monotonic()
        self.usage.device_seconds += now - self._clock
        self._clock = now

    def log_step(self, step: int, metrics: dict[str, Any], rollout_records: list[dict[str, Any]]) -> None:
        self.tick()
        self.last_metrics = {"step": step, **metrics}
        if not self.dist.is_main:
            return
        append_jsonl(self.metrics_path, self.last_metrics)
        if rollout_records:
            (self.run_dir / "rollouts").mkdir(exist_ok=True)
            text = "".join(json.dumps(r) + "\n" for r in rollout_records)
            (self.run_dir / "rollouts" / f"step_{step}.jsonl").write_text(text)
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, step)
            self.writer.flush()
        self.save_record()

    def save_record(self, durable: bool = False) -> None:
        if self.dist.is_main:
            usage = self.usage.as_record(self.cfg.usage.price_per_device_hour, devices=self.dist.world)
            self.record.update(self.last_metrics, usage, self.checkpoints, durable=durable)

    def set_status(self, status: str, error: str | None = None) -> None:
        if self.dist.is_main:
            self.record.set_status(status, error=error)
        else:  # the other ranks keep the status in memory only: it decides their exit code
            self.record.data["status"] = status

    def save_checkpoint(self, step: int, policy: Policy) -> None:
        if self.checkpoints and self.checkpoints[-1].endswith(f"step_{step}"):
            return
        self.tick()
        path = self.run_dir / "checkpoints" / f"step_{step}"
        # a sharded model is gathered by every rank; replicated weights are read by the writer alone
        snap = ckpt.snapshot(policy) if policy.sharded or self.dist.is_main else None
        if self.dist.is_main:  # one copy is the checkpoint
            extra = {
                "sampler": self.sampler.state_dict(),
                "usage": self.usage.__dict__.copy(),
                "last_metrics": self.last_metrics,
            }
            path = ckpt.save_checkpoint(self.run_dir, step, policy, extra, snap)
            ckpt.prune(self.run_dir, self.cfg.checkpoints.keep_last)
        kept = {str(p) for p in ckpt.complete_checkpoints(self.run_dir)} | {str(path)}
        self.checkpoints = [c for c in self.checkpoints if c in kept] + [str(path)]
        self.save_record(durable=True)

    def export_adapter(self, step: int, policy: Policy) -> None:
        """`[adapters]`: a standalone copy of the adapter every `interval` steps."""
        interval = self.cfg.adapters.interval
        if not interval or step % interval:
            return
        state = policy.adapter_state()  # every rank: gathering a sharded adapter is a collective
        if not self.dist.is_main:
            return
        root = self.run_dir / "adapters"
        # the layout vLLM applies (e.g. Qwen3.5's language_model prefix); checkpoints keep peft's own
        model_type = checkpoint_model_type(resolve_model_path(self.cfg.model))
        export_adapter(policy.model, root / f"step_{step}", model_type, state)
        if self.cfg.adapters.keep_last:
            found = sorted(root.glob("step_*"), key=lambda p: int(p.name[5:]))
            for old in found[: -self.cfg.adapters.keep_last]:
                shutil.rmtree(old, ignore_errors=True)

    def make_scorer(self) -> Scorer:
        return self.make_scorer_for(self.cfg)

    @staticmethod
    def make_scorer_for(cfg: Config) -> Scorer:
        s = cfg.scoring
        return Scorer(timeout_s=s.timeout_s, error_reward=s.error_reward, workers=s.workers)

    def open_writer(self) -> None:
        if self.cfg.run.tensorboard and self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def progress(self) -> Progress:
        return Progress(
            self.cfg.max_steps, self.start_step, enabled=self.cfg.run.progress and self.dist.is_main
        )

    @staticmethod
    def stop_token_ids(tokenizer: Any, generation_eos: int | list[int] | None) -> list[int]:
        """EOS of the tokenizer and the generation config, plus the chat formats' end-of-turn tokens."""
        ids = set(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        ids.add(tokenizer.eos_token_id)
        for tok in ("<|im_end|>", "<|eot_id|>", "<|return|>", "<|call|>"):
            tid = tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if isinstance(i, int) and i >= 0)

    def step_metrics(
        self,
        rollout: dict[str, float],
        train: dict[str, float],
        sync: dict[str, float],
        times: tuple[float, float, float, float],
    ) -> dict[str, Any]:
        rollout_s, train_s, sync_s, step_s = times
        self.usage.input_tokens += int(rollout["input_tokens"])
        self.usage.output_tokens += int(rollout["output_tokens"])
        self.usage.training_tokens += int(train.get("training_tokens", 0))
        return {
            **rollout,
            **train,
            **sync,
            "rollout_s": rollout_s,
            "train_s": train_s,
            "sync_s": sync_s,
            "step_s": step_s,
            "gen_tok_s": rollout["output_tokens"] / max(rollout_s, 1e-9),
            "train_tok_s": train.get("training_tokens", 0.0) / max(train_s, 1e-9),
            "tok_s": (rollout["input_tokens"] + rollout["output_tokens"]) / max(step_s, 1e-9),
            "nonfinite_skips": float(self.nonfinite_skips + train.get("skipped_update", 0.0)),
            "world_size": float(self.dist.world),
        }

    def check_skips(self, train: dict[str, float]) -> None:
        """Count consecutive skipped (non-finite) updates; too many in a row fails the run."""
        if train.get("skipped_update"):
            self.consecutive_skips += 1
            self.nonfinite_skips += 1
        else:
            self.consecutive_skips = 0
        limit = self.cfg.algorithm.max_nonfinite_skips
        if self.consecutive_skips >= limit:
            raise FloatingPointError(f"{limit} consecutive updates skipped: loss or gradient not finite")

    def maybe_eval(
        self, step: int, backend: Any, encoder: Any, sampling: Any, scorer: Scorer, metrics: dict[str, Any]
    ) -> None:
        """`[eval]` and `[val]` (the hosted shape has both; locally both score held-out rows), main rank;
        every rank when sampling is a collective (the hf backend on a sharded model)."""
        from rltrain.evaluate import evaluate

        here = self.dist.is_main or getattr(backend, "collective", False)
        for prefix, section in (("eval", self.cfg.eval), ("val", self.cfg.val)):
            if section is None or not section.interval or step % section.interval or not here:
                continue
            k = section.rollouts_per_example
            metrics.update(
                evaluate(
                    backend, encoder, self.slots, section.num_examples, k, sampling, scorer, prefix=prefix
                )
            )

    def finish(self, status: str) -> None:
        self.tick()
        self.save_record()
        if self.writer is not None:
            self.writer.close()
        self.set_status(
            status, error=f"stopped by {self.stop.signal_name}" if status == "cancelled" else None
        )

    def restore(self, state: dict[str, Any], step: int) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.usage = Usage(**state["usage"])
        self.last_metrics = state.get("last_metrics", {})
        self.start_step = step
        self.checkpoints = [str(p) for p in ckpt.complete_checkpoints(self.run_dir)]
        if self.dist.is_main:
            truncate_jsonl(self.metrics_path, step)


def open_run(cfg: Config, resume: Path | None, dist: Dist | None = None) -> tuple[Session, Path | None]:
    """Create (or reopen, for --resume) the run dir and record; returns the checkpoint to resume from."""
    dist = dist or Dist()
    run_dir, record, lock = open_run_dir(cfg, resume, dist)
    slots = build_slots(cfg)
    session = Session(cfg, run_dir, record, slots, PromptSampler(slots, cfg.run.seed), dist=dist, lock=lock)
    return session, latest_for_resume(run_dir, resume, dist)
