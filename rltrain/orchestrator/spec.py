"""The config resolved once, at the top of a run (or of `rltrain eval`), into a frozen `RunSpec` that every
part reads instead of deriving it again: the model's path, its tokenizer (loaded once), the
environments by kind, and the engine's size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import AutoConfig

from rltrain.config import Config
from rltrain.families import checkpoint_model_type
from rltrain.kinds.base import EnvSlot
from rltrain.models import resolve_model_path
from rltrain.orchestrator.sizing import Sizing, plan
from rltrain.orchestrator.slots import build_slots, eval_entries
from rltrain.rollout.prompting import PromptEncoder, template_kwargs
from rltrain.trainer.model import load_tokenizer


@dataclass(frozen=True)
class RunSpec:
    cfg: Config
    model_path: str  # what from_pretrained loads (registry names and builtins resolved)
    model_type: str | None  # the checkpoint's model_type: the adapter layout the engine applies
    tokenizer: Any  # the one tokenizer of the run (trainer and engine side)
    slots: tuple[EnvSlot, ...]  # the training environments
    eval_slots: tuple[EnvSlot, ...]  # `[[eval.env]]`, after the training ones (evaluation indices)
    sizing: Sizing

    @property
    def all_slots(self) -> list[EnvSlot]:
        return [*self.slots, *self.eval_slots]


def resolve(cfg: Config, eval_only: bool = False) -> RunSpec:
    """The run's spec. `eval_only` (`rltrain eval`): `[[eval.env]]` when the config has them, else the
    training environments, as the only slots."""
    model_path = resolve_model_path(cfg.model)
    tokenizer = load_tokenizer(model_path)
    if eval_only:
        slots, extra = build_slots(cfg, eval_entries(cfg) or cfg.env), []
    else:
        slots = build_slots(cfg)
        extra = build_slots(cfg, eval_entries(cfg)) if cfg.eval is not None and cfg.eval.env else []
    encoder = PromptEncoder(tokenizer, template_kwargs(cfg))
    # before the prompt order: prompts over seq_len leave the data
    sizing = plan(cfg, slots + extra, encoder, AutoConfig.from_pretrained(model_path))
    return RunSpec(
        cfg, model_path, checkpoint_model_type(model_path), tokenizer, tuple(slots), tuple(extra), sizing
    )
