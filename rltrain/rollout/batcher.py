"""One engine, many concurrent conversations: pending generation requests are batched into one call.

Episodes (ours, or a verifiers harness behind the HTTP endpoint) ask for their next turn whenever they
are ready; the batcher hands everything pending to the backend in one `sample` call (on its own
thread, so the event loop keeps running environment code), grouped by sampling settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from rltrain.rollout.backend import RolloutBackend
from rltrain.types import Completion, Request, SamplingParams


class Batcher:
    def __init__(
        self, backend: RolloutBackend, window_s: float = 0.02, busy: Callable[[], bool] = lambda: False
    ) -> None:
        """`busy()`: whether conversations are still in environment code; a batch waits up to `window_s`
        for them to join."""
        self.backend, self.window_s, self.busy = backend, window_s, busy
        self._pending: list[tuple[Request, SamplingParams, asyncio.Future[Completion]]] = []
        self._wake = asyncio.Event()
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for _, _, fut in self._pending:
            fut.cancel()
        self._engine.shutdown(wait=False, cancel_futures=True)

    def nudge(self) -> None:
        """Something changed (a conversation left environment code): look at the pending requests."""
        self._wake.set()

    async def generate(self, request: Request, sampling: SamplingParams) -> Completion:
        """The first of `request`'s completions (n = 1 per conversation turn)."""
        fut: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        self._pending.append((request, sampling, fut))
        self._wake.set()
        return await fut

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            deadline = loop.time() + self.window_s
            while self._pending and self.busy() and loop.time() < deadline:
                await asyncio.sleep(0.002)  # conversations finishing their environment call join this batch
            batch = [p for p in self._pending if not p[2].done()]
            self._pending = []
            keys: dict[SamplingParams, list[tuple[Request, asyncio.Future[Completion]]]] = {}
            for request, sampling, fut in batch:
                keys.setdefault(sampling, []).append((request, fut))
            for sampling, items in keys.items():
                await self._run(loop, sampling, items)

    async def _run(
        self,
        loop: asyncio.AbstractEventLoop,
        sampling: SamplingParams,
        items: list[tuple[Request, asyncio.Future[Completion]]],
    ) -> None:
        try:
            groups = await loop.run_in_executor(
                self._engine, self.backend.sample, [r for r, _ in items], sampling
            )
        except Exception as err:  # the engine failed: every waiting conversation fails with it
            for _, fut in items:
                if not fut.done():
                    fut.set_exception(err)
            return
        for (_, fut), group in zip(items, groups, strict=True):
            if not fut.done():
                fut.set_result(group.completions[0])
