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
(`Authorization: Bearer`), serves only generation, and lives only while the run does. A request is
untrusted input: token ids outside the vocabulary are refused (400) before they reach the engine, where
they would fail every request batched with them (on CUDA, a device-side assert kills the process). Its
sampling settings cannot change the distribution the trainer scores (the step's temperature, top_p,
top_k; no penalties, biases or constraints): such overrides are refused, the request is sampled at the
step's settings, and each refusal is counted per episode (its `X-Session-ID`, verifiers' trace id) and
logged once per setting. `max_tokens` may only narrow the step's.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections import Counter
from dataclasses import replace
from typing import Any

from aiohttp import web

from rltrain.rollout.batcher import Batcher
from rltrain.types import Completion, Request, SamplingParams, prompt_seed

TOKEN_VAR = "RLTRAIN_ENGINE_API_KEY"  # "API_KEY" in the name: verifiers strips it from subprocesses
SESSION_HEADER = "X-Session-ID"  # verifiers' train client: the rollout's trace id, every turn
log = logging.getLogger("rltrain")
# What only shapes the answer's form, or what the endpoint sets itself: taken or ignored, never refused
PASSIVE = frozenset(
    {"max_tokens", "stop_token_ids", "logprobs", "skip_special_tokens", "n", "seed", "stop"}
    | {"routed_experts_prompt_start", "include_stop_str_in_output", "spaces_between_special_tokens"}
)
TRAINED = ("temperature", "top_p", "top_k")  # must equal the step's: the trainer scores at them
NEUTRAL = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "min_p": 0.0}


class BadRequest(ValueError):
    """A request the endpoint refuses (400)."""


class Endpoint:
    def __init__(self, batcher: Batcher, model_name: str, max_context: int, vocab_size: int) -> None:
        self.batcher, self.model_name, self.max_context = batcher, model_name, max_context
        self.vocab_size = vocab_size  # token ids at or past it are refused
        self.token = secrets.token_urlsafe(32)
        self.sampling = SamplingParams(max_tokens=256)  # the step's defaults; requests may narrow them
        self.seen: Counter[tuple[int, ...]] = Counter()  # contexts asked for this step: seeds differ
        self.requests = 0
        self.refused: Counter[str] = Counter()  # refused sampling overrides, per session (episode)
        self._logged: set[str] = set()
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

    def _sampling(self, params: dict[str, Any], prompt_len: int) -> tuple[SamplingParams, list[str]]:
        """The step's sampling, narrowed where a request may narrow it; and the overrides refused."""
        s = self.sampling
        budget = self.max_context - prompt_len
        if budget < 1:
            raise BadRequest(f"the prompt ({prompt_len} tokens) fills the context ({self.max_context})")
        refused = [k for k in TRAINED if params.get(k) is not None and float(params[k]) != getattr(s, k)]
        refused += [
            k for k, v in params.items() if k not in PASSIVE and k not in TRAINED and not _neutral(k, v)
        ]
        asked = params.get("max_tokens")
        if asked is not None and (type(asked) is not int or asked < 1):
            raise BadRequest(f"max_tokens must be a positive integer, got {asked!r}")
        if asked is not None and asked > s.max_tokens:
            refused.append("max_tokens")  # may narrow the step's, never widen it
        stop = params.get("stop_token_ids") or s.stop_token_ids
        if not _ids_in(stop, self.vocab_size):
            raise BadRequest("stop_token_ids must be token ids of this model's vocabulary")
        tokens = min(asked or s.max_tokens, s.max_tokens, budget)
        return replace(s, max_tokens=tokens, stop_token_ids=tuple(stop), seed=None), refused

    def _refuse(self, session: str, refused: list[str], params: dict[str, Any]) -> None:
        self.refused[session] += len(refused)
        for key in refused:
            if key not in self._logged:  # each setting once: the records count every refusal
                self._logged.add(key)
                log.warning(
                    "engine endpoint: refused a request's %s = %.80r: sampled at the step's settings, "
                    "which the trainer scores",
                    key,
                    params.get(key),
                )

    async def _generate(self, request: web.Request) -> web.Response:
        try:
            ids, params = await _read(request, self.vocab_size)
            sampling, refused = self._sampling(params, len(ids))
        except BadRequest as err:
            return web.json_response({"error": {"message": str(err), "code": 400}}, status=400)
        if refused:
            self._refuse(request.headers.get(SESSION_HEADER, ""), refused, params)
        # the k-th request for the same context this step: a group's episodes share their first context
        key = tuple(ids)
        self.seen[key] += 1
        seed = None
        if self.sampling.seed is not None:
            seed = prompt_seed(self.sampling.seed, f"endpoint/{hash(key) & 0xFFFFFFFF}/{self.seen[key]}")
        self.requests += 1
        completion = await self.batcher.generate(Request(ids, 1, seed), sampling)
        return web.json_response({"model": self.model_name, "choices": [_choice(completion)]})


def _ids_in(ids: Any, vocab_size: int) -> bool:
    return isinstance(ids, list | tuple) and all(type(t) is int and 0 <= t < vocab_size for t in ids)


def _differs(value: Any, step: float) -> bool:
    try:
        return float(value) != step
    except (TypeError, ValueError):
        return True


def _neutral(key: str, value: Any) -> bool:
    """A setting at the value that leaves sampling as it is (an empty bias, a penalty of 0 or 1)."""
    return value is None or value in ({}, [], "") or (key in NEUTRAL and value == NEUTRAL[key])


async def _read(request: web.Request, vocab_size: int) -> tuple[list[int], dict[str, Any]]:
    """A generate request's token ids and sampling params; BadRequest for anything malformed."""
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    ids, params = body.get("token_ids"), body.get("sampling_params") or {}
    if not ids:
        raise BadRequest("token_ids is required")
    if not _ids_in(ids, vocab_size):
        raise BadRequest(f"token_ids must be integers in [0, {vocab_size}): this model's vocabulary")
    if not isinstance(params, dict):
        raise BadRequest("sampling_params must be a JSON object")
    return ids, params


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
