"""scripts/bench_gpu.py --tiny and scripts/bench_rollout.py --quick run end to end and write their JSON."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def run(script: str, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "scripts" / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_bench_gpu_tiny_measures_trainer_and_rollouts(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    # hf only: the GPU image has no vLLM (bench_rollout's test covers the shared vLLM helper)
    proc = run("bench_gpu.py", "--tiny", "--no-vllm", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trained tok/s" in proc.stdout and str(out) in proc.stdout
    report = json.loads(out.read_text())
    assert report["settings"]["tiny"] is True and "4·N_lin" in report["settings"]["flops_per_token"]
    assert report["device"] == report["device"] | {"name": "cpu", "peak_bf16_tflops": None}
    assert report["model"]["base_linear"] > 0 and report["model"]["lora"] > 0
    seqs, layouts = report["settings"]["seq_lens"], report["settings"]["layouts"]
    assert layouts == ["padded", "packed"]
    assert [(t["seq_len"], t["layout"]) for t in report["trainer"]] == [(q, x) for q in seqs for x in layouts]
    assert report["packed_over_padded"].keys() == {str(q) for q in seqs}
    for t in report["trainer"]:
        assert "error" not in t, t
        # groups of 8 share their prompt (a quarter of each sequence): packed runs it once per group
        logical = t["samples_per_step"] * t["seq_len"]
        expect = logical - (t["samples_per_step"] - t["samples_per_step"] // 8) * t["prompt_len"]
        assert t["forward_tokens"] == (logical if t["layout"] == "padded" else expect)
        assert t["trained_tok_s"] > 0 and t["tflops"] > 0 and t["mfu"] is None  # no peak known on CPU
        assert t["micro_batch_size"] in [r["micro_batch_size"] for r in t["tried"]]
    assert len(report["rollout"]) == len(report["settings"]["rollouts"])
    for r in report["rollout"]:
        assert r["backend"] == "hf" and r["tok_s"] > 0
        assert r["output_tokens"] == r["prompts"] * r["group"] * r["max_tokens"]  # no stop tokens
    target = report["target"]
    assert target["trained_tok_s"] == 20_000 and target["best_trained_tok_s"] > 0
    assert target["met"] == (target["best_trained_tok_s"] >= 20_000)


def test_bench_gpu_without_cuda_says_so_and_exits_2(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    proc = run("bench_gpu.py", "--out", str(tmp_path / "x.json"), timeout=60)
    assert proc.returncode == 2 and "--tiny" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_bench_rollout_quick_writes_the_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "rollout.json"
    proc = run("bench_rollout.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "vllm/hf" in proc.stdout and str(out) in proc.stdout
    report = json.loads(out.read_text())
    backends = ["hf", "vllm"] if HAS_VLLM else ["hf"]
    assert report["settings"]["backends"] == backends and report["settings"]["repeats"] == 2
    assert len(report["machine_before"]["loadavg"]) == 3
    (row,) = report["results"]
    assert (row["prompts"], row["group"], row["max_tokens"]) == (4, 8, 32)
    for name in backends:
        assert row[name]["output_tokens"] == 4 * 8 * 32  # exact lengths: EOS ignored on both backends
        assert row[name]["tok_s"] > 0 and row[name]["tok_per_cpu_s"] > 0 and len(row[name]["runs_s"]) == 2
    if HAS_VLLM:
        assert row["ratio_vllm_over_hf"] == pytest.approx(row["vllm"]["tok_s"] / row["hf"]["tok_s"])
    else:
        assert row["ratio_vllm_over_hf"] is None
