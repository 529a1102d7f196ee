import math

import pytest
import torch

from rltrain.algo.logprobs import entropy, token_logprobs


def test_token_logprobs_match_log_softmax_and_temperature() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=g)
    tokens = torch.randint(0, 7, (2, 3), generator=g)
    for temp in (1.0, 0.7):
        want = torch.log_softmax(logits / temp, -1).gather(-1, tokens[..., None]).squeeze(-1)
        assert torch.allclose(token_logprobs(logits, tokens, temp), want, atol=1e-6)


def test_entropy_of_uniform_and_peaked() -> None:
    uniform = torch.zeros(1, 2, 4)
    assert entropy(uniform).flatten().tolist() == pytest.approx([math.log(4)] * 2)
    peaked = torch.tensor([[[100.0, 0.0, 0.0, 0.0]]])
    assert float(entropy(peaked)) == pytest.approx(0.0, abs=1e-6)
    assert entropy(torch.randn(2, 5, 3), chunk=2).shape == (2, 5)
