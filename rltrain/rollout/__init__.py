"""Rollout backends: where completions are sampled. Only `vllm_backend` imports vllm."""
