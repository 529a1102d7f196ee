"""Data parallelism across ranks (one process per device), launched by `accelerate launch` or torchrun.

Every rank draws the same global batch (the prompt order is deterministic) and keeps its contiguous
share of prompts, so a group never spans ranks and advantages stay group-relative. Loss normalisers
are global, so summing the ranks' LoRA gradients gives exactly the full-batch gradient.

No collective may hang when a rank dies: every wait polls an abort marker in the run directory,
which a failing rank writes before exiting, so the others fail within a second instead of blocking
until the backend's timeout.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")
ABORT_FILE = ".abort"


class RankAborted(RuntimeError):
    """Another rank failed; this one stops too."""


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class Dist:
    """World of one by default; `init()` joins the process group when launched with several."""

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        self.abort_path: Path | None = None
        self._group: Any = None
        self._calls = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def init(self, device: str) -> torch.device:
        """Join the launcher's process group (gloo on CPU, nccl + gloo on CUDA); returns the device."""
        if launched_world_size() <= 1:
            return torch.device(
                device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
            )
        import torch.distributed as td
        from accelerate import PartialState

        cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        state = PartialState(cpu=cpu, timeout=timedelta(minutes=30))
        self.rank, self.world = state.process_index, state.num_processes
        # object exchange and aborts go through gloo even on GPU: CPU tensors, pollable waits
        self._group = td.new_group(backend="gloo")
        return torch.device(state.device)

    def set_run_dir(self, run_dir: Path) -> None:
        self.abort_path = run_dir / ABORT_FILE
        if self.is_main:
            self.abort_path.unlink(missing_ok=True)
        self.barrier()

    def abort(self, message: str) -> str:
        """Tell the other ranks to stop (written before this rank exits); returns the run's error:
        the first rank's to fail, when another rank got there before this one."""
        if not self.enabled or self.abort_path is None:
            return message
        mine = f"rank {self.rank}: {message}"
        # written whole, then linked in place: a peer polling the marker never reads it half-written
        # (open("x") + write let a peer read "" now and then, and the run's error was lost)
        staged = self.abort_path.with_name(f"{ABORT_FILE}.{self.rank}")
        staged.write_text(mine + "\n")
        try:
            os.link(staged, self.abort_path)  # exclusive: the first failure is never overwritten
        except FileExistsError:
            return self._first_failure() or mine
        except OSError:  # a filesystem without hard links: exclusive create, then write
            with contextlib.suppress(FileExistsError), self.abort_path.open("x") as f:
                f.write(mine + "\n")
                return mine
            return self._first_failure() or mine
        finally:
            staged.unlink(missing_ok=True)
        return mine

    def _first_failure(self) -> str:
        """The marker's message; a moment's patience where it could not be linked whole."""
        assert self.abort_path is not None
        for _ in range(50):
            text = self.abort_path.read_text().strip()
            if text:
                return text
            time.sleep(0.01)
        return ""

    def _wait(self, work: Any) -> None:
        while not work.is_completed():
            if self.abort_path is not None and self.abort_path.exists():
                raise RankAborted(self._first_failure() or "another rank failed")
            time.sleep(0.002)
        work.wait()

    def barrier(self) -> None:
        if self.enabled:
            self.all_reduce_sum([torch.zeros(1)])

    def all_reduce_sum(self, tensors: Sequence[torch.Tensor]) -> None:
        """In-place sum over ranks, in one flat CPU buffer (LoRA gradients are small)."""
        if not self.enabled or not tensors:
            return
        import torch.distributed as td

        flat = torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in tensors])
        self._wait(td.all_reduce(flat, group=self._group, async_op=True))
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t).to(t.dtype))
            offset += n

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order (pickled through a padded byte tensor)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as td

        data = torch.frombuffer(bytearray(pickle.dumps(obj)), dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.int64)
        sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        self._wait(td.all_gather(sizes, size, group=self._group, async_op=True))
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=torch.uint8)
        padded[: data.numel()] = data
        out = [torch.zeros(longest, dtype=torch.uint8) for _ in range(self.world)]
        self._wait(td.all_gather(out, padded, group=self._group, async_op=True))
        return [pickle.loads(o[: int(s.item())].numpy().tobytes()) for o, s in zip(out, sizes, strict=True)]

    def from_main(self, obj: T) -> T:
        """The main rank's `obj` on every rank (a decision only the main rank can take)."""
        return self.all_gather(obj)[0] if self.enabled else obj

    def all_done(self, mine: bool) -> bool:
        """True on every rank once every rank is done (lockstep decoding with a sharded model)."""
        return not self.any(not mine)

    def any(self, flag: bool) -> bool:
        """True on every rank when any rank's flag is set (e.g. a stop request)."""
        t = torch.tensor([float(flag)])
        self.all_reduce_sum([t])
        return bool(t.item() > 0)

    def check_in_sync(self, params: Sequence[torch.Tensor]) -> float:
        """Checksum of the trainable weights; raises when ranks disagree (they must step identically)."""
        total = float(sum(p.detach().double().abs().sum() for p in params))
        sums = self.all_gather(total)
        if max(sums) != min(sums):
            raise RuntimeError(f"ranks out of sync: LoRA weight checksums {sums}")
        return total

    def shard(self, count: int) -> tuple[int, int]:
        """(start, stop) of this rank's contiguous share of `count` prompts."""
        if count % self.world:
            raise ValueError(
                f"batch_size / rollouts_per_example = {count} prompts per step does not divide across "
                f"{self.world} processes"
            )
        per = count // self.world
        return self.rank * per, (self.rank + 1) * per

    def close(self, synced: bool = False) -> None:
        """Leave the process group. `synced` (every rank ending normally): meet the others first, so
        no rank tears gloo down while a peer still talks to it (a rank aborted at exit now and then
        without this barrier: "terminate called without an active exception"). A failing run skips
        it: a rank that died would never arrive."""
        if self.enabled:
            import torch.distributed as td

            if td.is_initialized():
                if synced:
                    with contextlib.suppress(Exception):  # a peer gone or aborted: leave anyway
                        self.barrier()
                td.destroy_process_group()
