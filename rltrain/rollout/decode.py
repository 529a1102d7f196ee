"""The token loop both hf-backend decoders share: pick, track stops, stop early, step the model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Pick = Callable[[Tensor, int], tuple[Tensor, Tensor]]  # (logits [B, V], t) -> token, logprob [B]
Step = Callable[[Tensor, int], Tensor]  # (token [B], t) -> next logits [B, V]


def decode_loop(
    logits: Tensor,
    step: Step,
    pick: Pick,
    stop: Tensor,
    max_tokens: int,
    *,
    all_done: Callable[[bool], bool] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sample up to `max_tokens` from the prompt's last logits [B, V].

    Returns tokens and logprobs [B, T], each row's length (through its first stop token) and whether
    it stopped [B]. Rows that stopped keep being computed until all have: batches stay rectangular.
    `all_done(mine)` says whether every rank is done: with a sharded model each step is a collective,
    so a rank that finished early keeps stepping until the last one has.
    """
    b = logits.shape[0]
    toks, lps = [], []
    done = torch.zeros(b, dtype=torch.bool, device=logits.device)
    lengths = torch.full((b,), max_tokens, dtype=torch.long, device=logits.device)
    for t in range(max_tokens):
        tok, lp = pick(logits.float(), t)
        toks.append(tok)
        lps.append(lp)
        hit = torch.isin(tok, stop) & ~done
        lengths = torch.where(hit, torch.full_like(lengths, t + 1), lengths)
        done |= hit
        finished = bool(done.all())
        if all_done is not None:
            finished = all_done(finished)
        if finished or t + 1 == max_tokens:
            break
        logits = step(tok, t)
    return torch.stack(toks, 1), torch.stack(lps, 1), lengths, done
