"""What a step records of its rollouts: one record per episode (rollouts/step_N.jsonl) and the step's
metrics over every rank's records."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from rltrain.rollout.episodes import Episode
from rltrain.rollout.signals import flat_group_share, repetition


def episode_record(ep: Episode, reward: float, advantage: float, parts: dict[str, float]) -> dict[str, Any]:
    return {
        "group": ep.group,
        "env": ep.env_name,
        "row": ep.row.key,
        "prompt": ep.row.prompt,  # for readers of rollouts/step_N.jsonl (dashboard, W&B tables)
        "completion": ep.text,
        "reward": reward,
        "advantage": advantage,
        "parts": parts,
        "prompt_tokens": ep.input_tokens,
        "completion_tokens": ep.output_tokens,
        **ep.record(),
    }


def rollout_metrics(
    records: Sequence[dict[str, Any]], errored: Counter[str], filtered: int
) -> dict[str, float]:
    """Step metrics from every episode's record (all ranks' records, when distributed)."""
    rewards = [r["reward"] for r in records]
    n = max(len(rewards), 1)
    mean = sum(rewards) / n
    out = {
        "reward_mean": mean,
        "reward_std": (sum((r - mean) ** 2 for r in rewards) / n) ** 0.5,
        "reward_max": max(rewards, default=0.0),  # the guards: has every completion the best reward?
        "completion_len_mean": sum(r["completion_tokens"] for r in records) / n,
        # a turn cut by its token limit truncates the episode, whatever ended it
        "truncated_frac": sum(
            r["finish"] in ("length", "context") or r.get("truncated", False) for r in records
        )
        / n,
        "excluded_episodes": float(sum(r.get("excluded", False) for r in records)),
        "errored_rollouts": float(sum(errored.values())),
        "errored_frac": sum(errored.values()) / n,
        "filtered_groups": float(filtered),
        "flat_group_frac": flat_group_share(records),  # the guards' "no learning signal"
        "repeat_frac": repetition([r["completion"] for r in records]),
        "input_tokens": float(sum(r["prompt_tokens"] for r in records)),
        "output_tokens": float(sum(r["completion_tokens"] for r in records)),
    }
    multi = [r for r in records if "turns" in r]
    if multi:
        out["turns_mean"] = sum(r["turns"] for r in multi) / len(multi)
        for key in ("tool_calls", "tool_errors", "splits", "env_s", "tool_s", "refused_sampling"):
            out[key] = float(sum(r.get(key, 0) for r in multi))
    for name in sorted({r["env"] for r in records}):
        mine = [r["reward"] for r in records if r["env"] == name]
        out[f"env/{name}/reward_mean"] = sum(mine) / len(mine)
        out[f"env/{name}/errored_rollouts"] = float(errored.get(name, 0))
    return out
