"""rltrain: local GRPO post-training of LoRA adapters with vLLM rollouts and pluggable environments."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rltrain.envs.base import Environment

__all__ = ["Environment"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`rltrain.Environment` on first use: `python -m rltrain runs` and the other run-directory commands
    import the package without the environment contract (asyncio, inspect)."""
    if name == "Environment":
        from rltrain.envs.base import Environment

        return Environment
    raise AttributeError(f"module 'rltrain' has no attribute {name!r}")
