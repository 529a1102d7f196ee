"""The run's engine as a token-in/token-out HTTP endpoint, for environments that bring their own agent
loop (verifiers v1 harnesses call it through verifiers' train client).

It speaks the route vLLM 0.32 mounts with `--enable-scale-out` (`POST /inference/v1/generate`, token
ids in, token ids and logprobs out) plus `GET /v1/models`, in the response shape verifiers' client
checks (`logprobs.content[i].token == "token_id:<id>"`), over the run's own rollout backend: the same
engine, the current adapter, batched with whatever else is pending. Why not vLLM's own server: it
needs an AsyncLLM, which always runs its engine core in a child process (a second engine next to the
training one; 14-52 s to start on this CPU against 4.6 s for the in-process engine), and its tokens
route answers in another logprob shape; this endpoint adds no engine and starts in milliseconds.

Safety: it binds 127.0.0.1 on an ephemeral port, refuses any request without the run's secret token
(`Authorization: Bearer`), serves only generation, and lives only while the run does.
"""

from __future__ import annotations

import hmac
import secrets
from collections import Counter
from dataclasses import replace
from typing import Any

from aiohttp import web

from rltrain.rollout.batcher import Batcher
from rltrain.types import Completion, Request, SamplingParams, prompt_seed

TOKEN_VAR = "RLTRAIN_ENGINE_API_KEY"  # "API_KEY" in the name: verifiers strips it from subprocesses


class Endpoint:
    def __init__(self, batcher: Batcher, model_name: str, max_context: int) -> None:
        self.batcher, self.model_name, self.max_context = batcher, model_name, max_context
        self.token = secrets.token_urlsafe(32)
        self.sampling = SamplingParams(max_tokens=256)  # the step's defaults; requests may narrow them
        self.seen: Counter[tuple[int, ...]] = Counter()  # contexts asked for this step: seeds differ
        self.requests = 0
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def begin_step(self, sampling: SamplingParams) -> None:
        self.sampling, self.seen = sampling, Counter()

    async def start(self) -> str:
        app = web.Application(middlewares=[self._auth], client_max_size=64 * 2**20)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/inference/v1/generate", self._generate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return web.json_response(
                {"error": {"message": "missing or wrong token", "code": 401}}, status=401
            )
        return await handler(request)  # type: ignore[no-any-return]

    async def _models(self, request: web.Request) -> web.Response:
        model = {"id": self.model_name, "object": "model", "max_model_len": self.max_context}
        return web.json_response({"object": "list", "data": [model]})

    def _sampling(self, params: dict[str, Any], prompt_len: int) -> SamplingParams:
        s = self.sampling
        budget = self.max_context - prompt_len
        if budget < 1:
            raise ValueError(f"the prompt ({prompt_len} tokens) fills the context ({self.max_context})")
        stop = tuple(params.get("stop_token_ids") or s.stop_token_ids)
        return replace(
            s,
            max_tokens=min(int(params.get("max_tokens") or s.max_tokens), budget),
            temperature=float(params.get("temperature", s.temperature)),
            top_p=float(params.get("top_p", s.top_p)),
            top_k=max(int(params.get("top_k", s.top_k) or 0), 0),
            stop_token_ids=stop,
            seed=None,
        )

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = [int(t) for t in body.get("token_ids") or []]
        if not ids:
            return web.json_response({"error": {"message": "token_ids is required", "code": 400}}, status=400)
        try:
            sampling = self._sampling(body.get("sampling_params") or {}, len(ids))
        except ValueError as err:
            return web.json_response({"error": {"message": str(err), "code": 400}}, status=400)
        # the k-th request for the same context this step: a group's episodes share their first context
        key = tuple(ids)
        self.seen[key] += 1
        seed = None
        if self.sampling.seed is not None:
            seed = prompt_seed(self.sampling.seed, f"endpoint/{hash(key) & 0xFFFFFFFF}/{self.seen[key]}")
        self.requests += 1
        completion = await self.batcher.generate(Request(ids, 1, seed), sampling)
        return web.json_response({"model": self.model_name, "choices": [_choice(completion)]})


def _choice(c: Completion) -> dict[str, Any]:
    content = [
        {"token": f"token_id:{t}", "logprob": lp} for t, lp in zip(c.token_ids, c.logprobs, strict=True)
    ]
    return {
        "index": 0,
        "token_ids": c.token_ids,
        "finish_reason": c.finish_reason,
        "logprobs": {"content": content},
    }
