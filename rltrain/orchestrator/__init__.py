"""The middle tier, between the loop and the engines (prime-rl's orchestrator): the run resolved once
(spec.py), the engine built around the policy (setup.py), where each step's rollouts come from
(sources.py, producer.py), batch assembly (collect.py, assemble.py, metrics.py, shares.py), adapter sync,
sizing and evaluation. docs/architecture.md draws the layers."""
