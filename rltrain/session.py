"""Everything a run holds between steps: run dir, record, policy, backend, sampler, counters.

`run.py` drives it; this module owns the bookkeeping so the loop itself stays short.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from rltrain import checkpoint as ckpt
from rltrain.config import Config, parse_config
from rltrain.data import EnvSlot, PromptSampler
from rltrain.envs.loader import load_rltrain_environment
from rltrain.envs.scoring import Scorer
from rltrain.progress import Progress
from rltrain.record import RunRecord, append_jsonl, truncate_jsonl, validate_run_id
from rltrain.trainer.model import Policy


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next safe point; a second signal stops at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


def load_env_files(paths: list[str], base: Path) -> list[str]:
    """KEY=VALUE lines into os.environ for the environment's code; returns the key names only."""
    keys = []
    for raw in paths:
        path = (base / raw).expanduser() if not Path(raw).is_absolute() else Path(raw)
        if not path.is_file():
            raise FileNotFoundError(f"env_files: {raw}: no such file")
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key.strip()] = value.strip().strip("'\"")
            keys.append(key.strip())
    return keys


def build_slots(cfg: Config) -> list[EnvSlot]:
    slots: list[EnvSlot] = []
    for entry in cfg.env:
        name = entry.name or entry.id
        if any(s.name == name for s in slots):
            raise ValueError(f"env: two entries named {name!r}; give one a `name`")
        slots.append(EnvSlot(name, load_rltrain_environment(entry.id, entry.args), entry.ratio))
    return slots


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    training_tokens: int = 0
    device_seconds: float = 0.0

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
    start_step: int = 0
    usage: Usage = field(default_factory=Usage)
    checkpoints: list[str] = field(default_factory=list)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    stop: StopFlag = field(default_factory=StopFlag)
    writer: Any = None
    nonfinite_skips: int = 0
    consecutive_skips: int = 0
    _lock: Any = None
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

    def save_record(self) -> None:
        usage = self.usage.as_record(self.cfg.usage.price_per_device_hour, devices=1)
        self.record.update(self.last_metrics, usage, self.checkpoints)

    def save_checkpoint(self, step: int, policy: Policy) -> None:
        if self.checkpoints and self.checkpoints[-1].endswith(f"step_{step}"):
            return
        self.tick()
        extra = {
            "sampler": self.sampler.state_dict(),
            "usage": self.usage.__dict__.copy(),
            "last_metrics": self.last_metrics,
        }
        path = ckpt.save_checkpoint(self.run_dir, step, policy, extra)
        ckpt.prune(self.run_dir, self.cfg.checkpoints.keep_last)
        kept = {str(p) for p in ckpt.complete_checkpoints(self.run_dir)}
        self.checkpoints = [c for c in self.checkpoints if c in kept] + [str(path)]
        self.save_record()

    def export_adapter(self, step: int, policy: Policy) -> None:
        """`[adapters]`: a standalone copy of the adapter every `interval` steps."""
        interval = self.cfg.adapters.interval
        if not interval or step % interval:
            return
        root = self.run_dir / "adapters"
        policy.save_adapter(root / f"step_{step}")
        if self.cfg.adapters.keep_last:
            found = sorted((p for p in root.glob("step_*")), key=lambda p: int(p.name[5:]))
            for old in found[: -self.cfg.adapters.keep_last]:
                shutil.rmtree(old, ignore_errors=True)

    def make_scorer(self) -> Scorer:
        return self.make_scorer_for(self.cfg)

    @staticmethod
    def make_scorer_for(cfg: Config) -> Scorer:
        s = cfg.scoring
        return Scorer(timeout_s=s.timeout_s, error_reward=s.error_reward, workers=s.workers)

    def open_writer(self) -> None:
        if self.cfg.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))

    def progress(self) -> Progress:
        return Progress(self.cfg.max_steps, self.start_step, enabled=self.cfg.run.progress)

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
        """`[eval]` and `[val]` (the hosted shape has both; locally both score held-out rows)."""
        from rltrain.evaluate import evaluate

        for prefix, section in (("eval", self.cfg.eval), ("val", self.cfg.val)):
            if section is None or not section.interval or step % section.interval:
                continue
            metrics.update(
                evaluate(
                    backend,
                    encoder,
                    self.slots,
                    section.num_examples,
                    section.rollouts_per_example,
                    sampling,
                    scorer,
                    prefix=prefix,
                )
            )

    def finish(self, status: str) -> None:
        self.tick()
        self.save_record()
        if self.writer is not None:
            self.writer.close()
        self.record.set_status(
            status, error=f"stopped by {self.stop.signal_name}" if status == "cancelled" else None
        )

    def acquire_lock(self) -> None:
        self._lock = (self.run_dir / ".lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"run {self.run_dir.name} is being written by another process") from None
        self._lock.write(str(os.getpid()))
        self._lock.flush()

    def restore(self, state: dict[str, Any], step: int) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.usage = Usage(**state["usage"])
        self.last_metrics = state.get("last_metrics", {})
        self.start_step = step
        self.checkpoints = [str(p) for p in ckpt.complete_checkpoints(self.run_dir)]
        truncate_jsonl(self.metrics_path, step)


def open_run(cfg: Config, resume: Path | None) -> tuple[Session, Path | None]:
    """Create (or reopen, for --resume) the run dir and record; returns the checkpoint to resume from."""
    if resume is not None:
        run_dir = resume.resolve()
        if not (run_dir / "run.json").is_file():
            raise FileNotFoundError(f"--resume {resume}: no run.json there")
        record = RunRecord.load(run_dir)
    else:
        run_id = validate_run_id(cfg.run.id or new_run_id())
        run_dir = (Path(cfg.run.output_dir) / run_id).resolve()
        if (run_dir / "run.json").exists():
            raise FileExistsError(f"run.id: {run_id} already exists in {cfg.run.output_dir} (use --resume)")
        run_dir.mkdir(parents=True, exist_ok=True)
        env_label = "+".join(e.id for e in cfg.env)
        record = RunRecord.create(
            run_dir,
            run_id,
            cfg.model,
            env_label,
            cfg.model_dump(mode="json"),
            cfg.run.team_id,
            status="queued",
        )
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
    slots = build_slots(cfg)
    session = Session(cfg, run_dir, record, slots, PromptSampler(slots, cfg.run.seed))
    session.acquire_lock()
    latest = ckpt.latest_checkpoint(run_dir) if resume is not None else None
    return session, latest


def stored_config(run_dir: Path) -> Config:
    return parse_config(json.loads((run_dir / "config.json").read_text()))
