"""Fixtures of the multi-turn episode tests: the tiny tokenizer, and collectors closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from transformers import AutoTokenizer

from rltrain.orchestrator.collect import Collector
from rltrain.tiny import tiny_model_path
from tests.rollout.scripted import make_collector, with_template


@pytest.fixture(scope="module")
def tok() -> Any:
    return AutoTokenizer.from_pretrained(str(tiny_model_path("qwen3")))


@pytest.fixture
def collector_for(tok: Any) -> Iterator[Callable[..., Collector]]:
    """make(env_id, model, template=None, **limits): a collector whose workers are killed after the test."""
    made: list[Collector] = []

    def make(env_id: str, model: Any, template: str | None = None, **limits: Any) -> Collector:
        tokenizer = tok if template is None else with_template(tok, template)
        made.append(make_collector(env_id, model, tokenizer, **limits))
        return made[-1]

    yield make
    for c in made:
        c.close()
