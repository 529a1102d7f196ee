"""`rltrain eval`: base model vs a trained adapter, as a table; eval during training in the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomli_w

from rltrain.config import parse_config
from rltrain.eval_cli import run_eval
from rltrain.record import read_jsonl
from rltrain.run import train


def _table(capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[3:] == ["avg@4", "95%", "interval", "pass@4", "95%", "interval"]
    name, _, _, avg, avg_interval, pas, _ = lines[2].split()
    assert name == "digits"
    lo, hi = map(float, avg_interval.strip("[]").split(","))
    assert lo <= float(avg) <= hi
    return {"avg": float(avg), "pass": float(pas), "lo": lo, "hi": hi}


def test_eval_base_then_trained_adapter(
    run_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = run_config(
        max_steps=14, batch_size=32, sampling={"max_tokens": 24}, eval={"interval": 7}, val={"interval": 14}
    )
    session = train(parse_config(raw))
    rows = read_jsonl(session.run_dir / "metrics.jsonl")
    assert rows[0]["step"] == 0 and "eval/digits/avg@1" in rows[0]  # the base model, before step 1
    lo, avg, hi = (rows[7][f"eval/digits/avg@1{s}"] for s in ("/lo", "", "/hi"))
    assert lo <= avg <= hi and hi - lo > 0  # with its interval
    assert "eval/digits/avg@1" in rows[7] and "eval/digits/pass@1" in rows[14]
    assert "val/digits/avg@1" in rows[14] and "val/digits/avg@1" not in rows[7]
    capsys.readouterr()
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(raw))
    assert run_eval(["--config", str(path), "-k", "4", "--num-examples", "8"]) == 0
    base = _table(capsys)
    adapter = session.run_dir / "checkpoints" / "step_14"
    assert run_eval(["--config", str(path), "-k", "4", "--num-examples", "8", "--adapter", str(adapter)]) == 0
    trained = _table(capsys)
    assert trained["avg"] > base["avg"] + 0.3, (base, trained)
    assert trained["lo"] > base["hi"]  # the gain is more than the noise of 8 rows
    assert run_eval(["--config", str(path), "--adapter", str(tmp_path)]) == 2
    rows = ["--config", str(path), "-k", "4", "--num-examples", "8"]
    assert run_eval([*rows, "--compare", str(adapter), "base", "--json", str(tmp_path / "c.json")]) == 0
    gain = json.loads((tmp_path / "c.json").read_text())["environments"]["digits"]
    assert gain["diff"]["value"] == pytest.approx(trained["avg"] - base["avg"], abs=1e-3)
    assert gain["diff"]["lo"] > 0 and gain["p_value"] < 0.05 and gain["diff"]["n"] == 8
    assert "a - b" in capsys.readouterr().out
    # the same policy twice: the same rows and seeds give the same completions, so exactly no difference
    assert run_eval([*rows, "--compare", "base", "base", "--json", str(tmp_path / "same.json")]) == 0
    same = json.loads((tmp_path / "same.json").read_text())["environments"]["digits"]
    assert same["diff"]["value"] == 0.0 and same["p_value"] == 1.0


def test_eval_is_a_cli_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("model = 'builtin:tiny'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rltrain", "eval", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "max_steps: required key is missing" in proc.stderr
