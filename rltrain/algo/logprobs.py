"""Logprobs of chosen tokens without materialising a full-vocabulary log-softmax."""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(token) under softmax(logits / temperature).

    logits [B, T, V], tokens [B, T] -> [B, T]. gather - logsumexp keeps one [B, T, V] tensor alive
    (the logits) instead of two.
    """
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return picked - torch.logsumexp(logits, dim=-1)


@torch.no_grad()
def entropy(logits: Tensor, temperature: float = 1.0, chunk: int = 1024) -> Tensor:
    """Entropy of softmax(logits / temperature) per position, [B, T, V] -> [B, T], chunked over T."""
    out = []
    for part in logits.split(chunk, dim=1):
        if temperature not in (0.0, 1.0):
            part = part / temperature
        logp = torch.log_softmax(part.float(), dim=-1)  # [B, t, V]
        out.append(-(logp.exp() * logp).sum(-1))
    return torch.cat(out, dim=1)
