"""`python -m rltrain serve`: a local server for watching runs, in two dialects on one port:

- the routes of prime's Hosted Training API that `prime train list/get/stop/delete/logs/metrics/
  rollouts/progress/checkpoints/distributions/usage` call (prime 0.18, PRIME_API_BASE_URL pointed here),
  and the create route `prime train rl.toml` posts to, which queues the run (rltrain/serve/api.py);
- a dashboard at `/` (rltrain/serve/static/): the runs table, live curves, rollouts, a cancel button.

The HTTP stack is the standard library's `ThreadingHTTPServer`, chosen over aiohttp (present only as a
dependency of verifiers) and FastAPI/uvicorn (present only with vLLM): `serve` then works in every
install, including `RLTRAIN_VLLM=none`, adds no dependency, and imports in milliseconds. The load it
must carry is small: a few people and CLIs polling JSON files that change once a step. Measured on the
shared 2-core machine (scripts/bench_serve.py, docs/benchmarks.md): 50 clients polling like the
dashboard, once a second, make ~145 requests/s, answered at p50 2-4 ms with 4-5 % of one core; with no
sleeps it answers ~2,750 requests/s. The cost that matters is the CPU taken from the training process
beside it, and that is kept down by caching parsed files and encoded rows (rltrain/serve/store.py),
whatever the framework.
"""
