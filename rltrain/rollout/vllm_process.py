"""What an in-process vLLM engine does to its host process, and how rltrain undoes it.

Imports no vllm itself: the engine's loggers are configured by name before it starts.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager

# vLLM warnings that are expected here, each harmless: the in-process engine reseeds the RNGs and locks
# torch's thread count (both undone in protect_process_state); chunked prefill is off on CPU on purpose
# (see _engine_kwargs; the parity tests cover it); the CPU wheel has no Triton (docs/vllm.md: uninstall it);
# peft adapter dirs carry no tokenizer; restarts in one process re-register kernels. Keyed by logger,
# because vLLM replaces its handlers when an engine starts.
_NOISE = {
    "vllm.engine.arg_utils": ("global random seed", "officially support disabling chunked prefill"),
    "vllm.v1.worker.cpu_worker": ("torch.set_num_threads",),
    "vllm.platforms.cpu": ("Triton is not installed", "SSM cache type"),
    "vllm.config.vllm": ("Model Runner V2 requires Triton",),
    "vllm.v1.engine.input_processor": ("different tokenizers for different LoRAs",),
    "vllm.triton_utils.dispatcher": ("already registered",),
    "vllm.platforms.interface": ("VLLM_DIST_IDENT",),
}


class _DropKnownNoise(logging.Filter):
    def __init__(self, texts: tuple[str, ...]) -> None:
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def silence_known_noise() -> None:
    for name, texts in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnownNoise) for f in logger.filters):
            logger.addFilter(_DropKnownNoise(texts))


@contextmanager
def protect_process_state() -> Iterator[None]:
    """Undo what an in-process vLLM engine does to the trainer's process while it starts.

    It reseeds the global RNGs with the engine seed, and its CPU worker replaces `torch.set_num_threads`
    with a no-op (meant for pinned worker processes; in-process nothing is pinned).
    """
    import numpy as np
    import torch

    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    set_num_threads, num_threads = torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        torch.set_num_threads = set_num_threads  # type: ignore[method-assign]
        torch.set_num_threads(num_threads)
