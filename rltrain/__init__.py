"""rltrain: local GRPO post-training of LoRA adapters with vLLM rollouts and pluggable environments."""

from rltrain.envs.base import Environment

__all__ = ["Environment"]
__version__ = "0.1.0"
