"""The shared token loop: stops, lengths, early exit, and the lockstep hook for sharded models."""

from __future__ import annotations

import torch

from rltrain.rollout.decode import decode_loop

V = 5


def _onehot(tokens: list[int]) -> torch.Tensor:
    logits = torch.full((len(tokens), V), -10.0)
    logits[torch.arange(len(tokens)), torch.tensor(tokens)] = 10.0
    return logits


def test_rows_stop_at_their_first_stop_token_and_the_loop_exits_when_all_did() -> None:
    script = [[1, 4], [4, 2], [3, 3]]  # row 0 stops at t=1, row 1 at t=0; token 4 is the stop
    steps: list[int] = []

    def step(tok: torch.Tensor, t: int) -> torch.Tensor:
        steps.append(t)
        return _onehot(script[t + 1])

    def pick(logits: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.argmax(-1), torch.log_softmax(logits, -1).max(-1).values

    toks, lps, lengths, done = decode_loop(_onehot(script[0]), step, pick, torch.tensor([4]), max_tokens=3)
    assert toks.tolist() == [[1, 4], [4, 2]]  # exits after t=1: every row has stopped
    assert lengths.tolist() == [2, 1] and done.tolist() == [True, True]
    assert steps == [0] and lps.shape == (2, 2)


def test_length_limit_and_lockstep_hook() -> None:
    calls: list[bool] = []

    def all_done(mine: bool) -> bool:
        calls.append(mine)
        return False  # another rank is still decoding: keep stepping

    def step(tok: torch.Tensor, t: int) -> torch.Tensor:
        return _onehot([4])

    def pick(logits: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        return logits.argmax(-1), torch.zeros(1)

    toks, _, lengths, done = decode_loop(_onehot([1]), step, pick, torch.tensor([4]), 3, all_done=all_done)
    assert toks.tolist() == [[1, 4, 4]] and lengths.tolist() == [2] and done.tolist() == [True]
    assert calls == [False, True, True]  # this rank was done after t=1, but stepped until the limit
