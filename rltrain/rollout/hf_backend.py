"""transformers rollout backend: KV-cached sampling without vLLM (and, on CPU, faster than vLLM-CPU).

Not `model.generate`: its per-token logits processors, stopping criteria and score bookkeeping cost
more than the forward of a small model. Llama/Qwen3 take the lean fused decoder; every other model
takes transformers' own forward, one call per token for the whole batch.

With `policy_model` it samples from the trainer's live peft model (nothing to export or reload);
otherwise it loads its own copy and reads adapters from disk like vLLM does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rltrain.rollout.backend import BackendBase
from rltrain.rollout.decode import Pick, decode_loop
from rltrain.rollout.lean_decoder import LeanDecoder, lean_supported
from rltrain.types import Completion, Group, Request, SamplingParams


def _filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # [B, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = probs - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), float("-inf"))
    return logits


def _chunks(sizes: Sequence[int], limit: int) -> list[slice]:
    """Consecutive requests packed into chunks of at most `limit` rows; a request is never split."""
    out, start, rows = [], 0, 0
    for i, n in enumerate(sizes):
        if rows and rows + n > limit:
            out.append(slice(start, i))
            start, rows = i, 0
        rows += n
    if start < len(sizes):
        out.append(slice(start, len(sizes)))
    return out


class HFBackend(BackendBase):
    name = "hf"

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        pad_id: int,
        device: torch.device,
        *,
        policy_model: Any | None = None,
        model_path: str | None = None,
        dtype: torch.dtype = torch.float32,
        max_batch: int | None = None,
        lean: bool = True,
        all_done: Callable[[bool], bool] | None = None,
        live: tuple[Any, Callable[[], int]] | None = None,
    ) -> None:
        """`live`: (the lock the trainer holds while it writes the weights, its version) when sampling
        the trainer's own model: each call snapshots the weights under the lock (the lean decoder's
        merged copies), so sampling may run beside training."""
        self.decode = decode
        self.all_done = all_done  # set when the shared model is sharded: decoding steps in lockstep
        self.collective = all_done is not None
        self.pad_id = pad_id
        self.device = device
        self.max_batch = max_batch
        self.version = 0
        self.reads_live_weights = policy_model is not None
        if policy_model is not None:
            self.model = policy_model
        elif model_path is not None:
            from transformers import AutoModelForCausalLM

            base: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
            self._base = base.to(device).eval()
            self.model = self._base
        else:
            raise ValueError("HFBackend needs policy_model or model_path")
        self.timings: dict[str, float] = {"startup_s": 0.0}
        self.lean_requested = lean
        self.lean = lean and lean_supported(self.model)  # else transformers' own forward
        self.live = live
        self._held: LeanDecoder | None = None

    def load_adapter(self, path: Path | None, version: int) -> None:
        self.version = version
        if self.reads_live_weights:
            return  # the live trainer model already holds the new weights
        from peft import PeftModel

        self.model = self._base if path is None else PeftModel.from_pretrained(self._base, str(path)).eval()
        self.lean = self.lean_requested and lean_supported(self.model)

    def sleep(self) -> None:
        pass  # the shared model is the trainer's: nothing to free

    def wake_up(self) -> None:
        pass

    def close(self) -> None:
        self.model = None

    def sample(self, requests: Sequence[Request], sampling: SamplingParams) -> list[Group]:
        if not requests:
            return []
        completions: list[Completion] = []
        was_training = self.model.training
        lean = self._snapshot()
        if lean is None:  # transformers' forward on the model itself: eval mode while sampling
            self.model.eval()
        try:
            for part in _chunks([r.n for r in requests], self.max_batch or sum(r.n for r in requests)):
                rows = [list(r.prompt_ids) for r in requests[part] for _ in range(r.n)]
                noise = self._noise(requests[part], sampling).to(self.device)  # [rows, max_tokens]
                completions.extend(self._sample(rows, sampling, noise, lean))
        finally:
            if lean is None:
                self.model.train(was_training)
        out, at = [], 0
        for r in requests:
            out.append(Group(list(r.prompt_ids), completions[at : at + r.n]))
            at += r.n
        return out

    @property
    def samples_beside_training(self) -> bool:
        """Not when each token is a collective, nor through transformers' forward on the weights the
        trainer is writing; the lean decoder samples from its own merged snapshot."""
        return not self.collective and (self.lean or not self.reads_live_weights)

    def hold(self) -> None:
        self._held = None
        self._held = self._snapshot()

    def release(self) -> None:
        self._held = None

    def _snapshot(self) -> LeanDecoder | None:
        """The lean decoder: the adapter merged into fresh fused weights once per call (~2 ms), taken
        under the trainer's lock when sampling its live model (the version is the snapshot's)."""
        if not self.lean:
            return None
        if self._held is not None:
            return self._held
        if self.live is None or not self.reads_live_weights:
            return LeanDecoder(self.model)
        lock, version = self.live
        with lock:
            self.version = version()
            return LeanDecoder(self.model)

    @staticmethod
    def _noise(requests: Sequence[Request], sp: SamplingParams) -> Tensor:
        """Uniform draws for inverse-CDF sampling, [rows, max_tokens], one stream per request.

        Seeded by the request's own seed (for a group, its prompt's global index), so a prompt's samples
        do not depend on which other prompts share the call: a run split across ranks, or an episode
        batched with others, samples exactly what it would alone.
        """
        out = []
        for r in requests:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(r.seed if r.seed is not None else int(torch.seed() % 2**62))
            out.append(torch.rand((r.n, sp.max_tokens), generator=gen, dtype=torch.float64))
        return torch.cat(out)

    def _pad(self, rows: list[list[int]], max_tokens: int) -> tuple[Tensor, Tensor]:
        """Left-padded ids [B, P] and the valid-token mask [B, P + max_tokens] (bool)."""
        b, p = len(rows), max(len(r) for r in rows)
        ids = torch.full((b, p), self.pad_id, dtype=torch.long)
        valid = torch.zeros((b, p + max_tokens), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, p - len(r) :] = torch.tensor(r)
            valid[i, p - len(r) : p] = True
        valid[:, p:] = True  # tokens after a row's stop are computed but never returned
        return ids.to(self.device), valid.to(self.device)

    @torch.no_grad()
    def _sample(
        self, rows: list[list[int]], sp: SamplingParams, noise: Tensor, lean: LeanDecoder | None
    ) -> list[Completion]:
        ids, valid = self._pad(rows, sp.max_tokens)
        stop = torch.tensor(sorted(sp.stop_token_ids) or [-1], device=self.device)

        def pick(logits: Tensor, t: int) -> tuple[Tensor, Tensor]:
            return self._pick(logits, sp, noise[:, t])

        if lean is not None:  # never with all_done: a sharded model takes the transformers path
            return self._collect(*lean.sample(ids, valid, sp.max_tokens, stop, pick))
        return self._collect(*self._sample_transformers(ids, valid, sp.max_tokens, stop, pick))

    def _sample_transformers(
        self, ids: Tensor, valid: Tensor, max_tokens: int, stop: Tensor, pick: Pick
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The general path: any causal LM through transformers' own KV cache."""
        p = ids.shape[1]
        attn = valid.long()
        pos = (attn[:, :p].cumsum(-1) - 1).clamp(min=0)  # [B, P]
        out = self.model(
            input_ids=ids, attention_mask=attn[:, :p], position_ids=pos, use_cache=True, logits_to_keep=1
        )
        state = {"past": out.past_key_values}

        def step(tok: Tensor, t: int) -> Tensor:
            out = self.model(
                input_ids=tok[:, None],
                attention_mask=attn[:, : p + t + 1],
                position_ids=pos[:, -1:] + 1 + t,
                past_key_values=state["past"],
                use_cache=True,
            )
            state["past"] = out.past_key_values
            return out.logits[:, -1, :]

        return decode_loop(out.logits[:, -1, :], step, pick, stop, max_tokens, all_done=self.all_done)

    def _pick(self, logits: Tensor, sp: SamplingParams, u: Tensor) -> tuple[Tensor, Tensor]:
        if sp.temperature == 0.0:
            tok = logits.argmax(-1)
            return tok, torch.log_softmax(logits, -1).gather(-1, tok[:, None]).squeeze(-1)
        scaled = _filter_logits(logits / sp.temperature, sp.top_k, sp.top_p)
        logp = torch.log_softmax(scaled, dim=-1)  # [B, V]
        # inverse CDF with our own uniform draws: vectorised, and reproducible per prompt
        cdf = logp.double().exp().cumsum(-1)  # [B, V]
        tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
        tok = tok.clamp(max=logits.shape[-1] - 1)
        return tok, logp.gather(-1, tok[:, None]).squeeze(-1)

    def _collect(self, toks: Tensor, lps: Tensor, lengths: Tensor, done: Tensor) -> list[Completion]:
        toks_l, lps_l, lens_l, done_l = toks.tolist(), lps.tolist(), lengths.tolist(), done.tolist()
        out = []
        for row_t, row_lp, n, stopped in zip(toks_l, lps_l, lens_l, done_l, strict=True):
            ids = row_t[:n]
            out.append(Completion(ids, row_lp[:n], self.decode(ids), "stop" if stopped else "length"))
        return out

    def score_logprobs(self, prompt_ids: list[int], completion_ids: list[int]) -> list[float]:
        ids = torch.tensor([prompt_ids + completion_ids], device=self.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids, use_cache=False).logits[0, len(prompt_ids) - 1 : -1].float()
        lp = torch.log_softmax(logits, -1).gather(
            -1, torch.tensor(completion_ids, device=self.device)[:, None]
        )
        return lp.squeeze(-1).tolist()
