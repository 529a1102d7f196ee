"""`python -m rltrain serve`: a local server for watching runs, in two dialects on one port:

- the routes of prime's Hosted Training API that `prime train list/get/stop/delete/logs/metrics/
  rollouts/progress/checkpoints/distributions/usage` call (prime 0.18, PRIME_API_BASE_URL pointed here),
  and the create route `prime train rl.toml` posts to, which queues the run (rltrain/serve/api.py);
- a dashboard at `/` (rltrain/serve/static/): the runs table, live curves, rollouts, a cancel button.

The HTTP stack is the standard library's `ThreadingHTTPServer`, chosen over aiohttp (present only as a
dependency of verifiers) and FastAPI/uvicorn (present only with vLLM): `serve` then works in every
install, including `RLTRAIN_VLLM=none`, adds no dependency, and imports in milliseconds. The load it
must carry is small: a few people and CLIs polling JSON files that change once a step. Measured on the
2-core machine with 50 concurrent clients (scripts/bench_serve.py, docs/benchmarks.md), it answers
cached metrics and rollouts far faster than a dashboard polls; the cost that matters is the CPU it takes
from the training process beside it, which caching parsed files (rltrain/serve/store.py) keeps down,
whatever the framework.
"""
