"""The run's token endpoint (rollout/endpoint.py, what verifiers' train client calls): it needs the run's
token, speaks the client's format, samples at the step's settings whatever a request asks, and refuses
token ids outside the vocabulary before they reach the engine. Needs only aiohttp (not verifiers)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from rltrain.config import parse_config
from rltrain.rollout.batcher import Batcher
from rltrain.rollout.endpoint import SESSION_HEADER, Endpoint
from rltrain.types import Completion, Group, Request, SamplingParams

Exchange = Callable[[Endpoint, str, aiohttp.ClientSession], Awaitable[Any]]


def _serve(backend: Any, step: SamplingParams, exchange: Exchange, vocab: int = 1024) -> Any:
    """Start an endpoint on `backend`, begin a step at `step`, run `exchange(endpoint, url, session)`."""

    async def run() -> Any:
        endpoint = Endpoint(Batcher(backend), "policy", max_context=64, vocab_size=vocab)
        endpoint.batcher.start()
        url = await endpoint.start()
        endpoint.begin_step(step)
        try:
            async with aiohttp.ClientSession() as session:
                return await exchange(endpoint, url.removesuffix("/v1"), session)
        finally:
            await endpoint.stop()
            await endpoint.batcher.stop()

    return asyncio.run(run())


class Recording:
    """A stand-in engine that records the sampling settings it was asked for."""

    def __init__(self) -> None:
        self.asked: list[SamplingParams] = []

    def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
        self.asked.append(sampling)
        return [Group(r.prompt_ids, [Completion([7, 8], [-0.1, -0.2], "", "length")]) for r in requests]


def test_endpoint_needs_the_token_and_speaks_the_train_clients_format(tiny_model: str) -> None:
    from rltrain.rollout.hf_backend import HFBackend
    from rltrain.trainer.model import load_policy

    cfg = {"model": "builtin:tiny", "max_steps": 1, "batch_size": 1, "rollouts_per_example": 1}
    policy = load_policy(parse_config(cfg | {"env": [{"id": "digits"}]}), tiny_model)
    backend = HFBackend(lambda ids: "", 0, policy.device, policy_model=policy.model)
    body = {"model": "policy", "token_ids": [5, 6, 7], "sampling_params": {"max_tokens": 4, "logprobs": 1}}

    async def exchange(endpoint: Endpoint, base: str, s: aiohttp.ClientSession) -> tuple[int, dict, dict]:
        auth = {"Authorization": f"Bearer {endpoint.token}"}
        async with s.post(base + "/inference/v1/generate", json=body) as r:
            refused = r.status
        async with s.get(base + "/v1/models", headers=auth) as r:
            models = await r.json()
        async with s.post(base + "/inference/v1/generate", json=body, headers=auth) as r:
            return refused, models, await r.json()

    refused, models, out = _serve(backend, SamplingParams(max_tokens=5, seed=3), exchange)
    assert refused == 401  # no token, no tokens
    assert models["data"] == [{"id": "policy", "object": "model", "max_model_len": 64}]
    choice = out["choices"][0]
    assert 1 <= len(choice["token_ids"]) <= 4 and choice["finish_reason"] in ("stop", "length")
    assert [e["token"] for e in choice["logprobs"]["content"]] == [
        f"token_id:{t}" for t in choice["token_ids"]
    ]
    assert all(e["logprob"] <= 0 for e in choice["logprobs"]["content"])


def test_requests_cannot_change_the_trained_distribution() -> None:
    """temperature, top_k, biases and penalties stay the step's; max_tokens only narrows; refusals are
    counted per episode."""
    engine = Recording()
    step = SamplingParams(max_tokens=4, temperature=1.0, top_p=0.9)
    asks = [
        {"temperature": 0.3, "max_tokens": 200, "top_k": 3, "logit_bias": {"5": 100}},
        {"temperature": 1.0, "top_p": 0.9, "max_tokens": 2, "repetition_penalty": 1.0, "logprobs": 1},
    ]

    async def exchange(endpoint: Endpoint, base: str, s: aiohttp.ClientSession) -> Counter:
        for i, params in enumerate(asks):
            headers = {"Authorization": f"Bearer {endpoint.token}", SESSION_HEADER: f"trace-{i}"}
            body = {"token_ids": [5, 6], "sampling_params": params}
            async with s.post(base + "/inference/v1/generate", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
        return endpoint.refused

    refused = _serve(engine, step, exchange)
    first, second = engine.asked
    assert (first.temperature, first.top_p, first.top_k, first.max_tokens) == (1.0, 0.9, 0, 4)
    assert second.max_tokens == 2  # narrowed: allowed
    assert refused == {"trace-0": 4}  # temperature, top_k, logit_bias, a wider max_tokens


def test_out_of_vocabulary_and_malformed_requests_are_refused() -> None:
    engine = Recording()
    bad = [
        {"token_ids": [5, 1024]},  # past the vocabulary: would fail every request batched with it
        {"token_ids": [-1]},
        {"token_ids": [5.5]},
        {"token_ids": ["5"]},
        {"token_ids": [5], "sampling_params": {"stop_token_ids": [99999]}},
        {"token_ids": [5], "sampling_params": {"max_tokens": "many"}},
        {"token_ids": [5], "sampling_params": [1]},
        [5, 6],
    ]

    async def exchange(endpoint: Endpoint, base: str, s: aiohttp.ClientSession) -> list[int]:
        auth = {"Authorization": f"Bearer {endpoint.token}"}
        statuses = []
        for body in [*bad, {"token_ids": [5, 1023]}]:
            async with s.post(base + "/inference/v1/generate", json=body, headers=auth) as r:
                statuses.append(r.status)
        async with s.post(base + "/inference/v1/generate", data=b"{not json", headers=auth) as r:
            statuses.append(r.status)
        return statuses

    statuses = _serve(engine, SamplingParams(max_tokens=4), exchange)
    assert statuses == [400] * len(bad) + [200, 400] and len(engine.asked) == 1
