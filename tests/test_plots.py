"""Training curves: runs/<id>/curves.png at checkpoints and at the end, and the overlay of several
runs (`runs plot`, tested in tests/test_cli.py)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image

from rltrain.config import parse_config
from rltrain.guards import Event
from rltrain.plots import PANELS, Limits, _draw_panel, draw, events, robust_limits
from rltrain.run import train

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(reward: float, envs: tuple[str, ...] = ("digits",)) -> list[dict[str, Any]]:
    rows = []
    for step in range(1, 6):
        row = {"step": step, "reward_mean": reward * step, "loss": 0.1 / step, "kl": 0.0, "mismatch_kl": 1e-4}
        row |= {"completion_len_mean": 10.0 + step, "tok_s": 100.0, "gen_tok_s": 80.0, "train_tok_s": 300.0}
        row |= {f"env/{e}/reward_mean": reward * step * (i + 1) for i, e in enumerate(envs)}
        if step % 2 == 0:
            row["eval/digits/avg@1"] = 0.5
        rows.append(row)
    return rows


def _valid_png(path: Path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(PNG)
    with Image.open(io.BytesIO(data)) as img:
        img.verify()  # chunks and CRCs
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "PNG" and img.size == (1200, 640)
    return data


def test_curves_are_a_png_whose_pixels_follow_the_data(tmp_path: Path) -> None:
    a = _valid_png(draw({"run": _rows(0.1)}, tmp_path / "a.png"))
    again = _valid_png(draw({"run": _rows(0.1)}, tmp_path / "again.png"))
    b = _valid_png(draw({"run": _rows(0.2)}, tmp_path / "b.png"))
    assert a == again  # deterministic: what differs below is the data
    assert a != b
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, then renamed into place


def test_panels_cover_rewards_per_environment_eval_loss_kl_length_and_throughput() -> None:
    mixed = _rows(0.1, envs=("digits", "caps"))
    keys = {p.title: p.series(mixed) for p in PANELS}
    assert keys["reward"] == ["reward_mean", "env/caps/reward_mean", "env/digits/reward_mean"]
    assert keys["eval (avg@k, pass@k)"] == ["eval/digits/avg@1"]
    assert keys["loss"] == ["loss"] and keys["KL / mismatch"] == ["kl", "mismatch_kl"]
    stale = [r | {"stale_kl": 0.01} for r in mixed]  # sampling ahead: the drift of older samples
    assert {p.title: p.series(stale) for p in PANELS}["KL / mismatch"] == ["kl", "mismatch_kl", "stale_kl"]
    assert keys["completion length (tokens)"] == ["completion_len_mean"]
    assert keys["tokens/s"] == ["tok_s", "gen_tok_s", "train_tok_s"]
    assert {p.title: p.series(_rows(0.1)) for p in PANELS}["reward"] == ["reward_mean"]  # one env: no repeat


def test_eval_intervals_are_bands_and_guard_events_are_marked(tmp_path: Path) -> None:
    plain = _rows(0.1)
    marked = _rows(0.1)
    for row in marked:
        if "eval/digits/avg@1" in row:
            row |= {"eval/digits/avg@1/lo": 0.3, "eval/digits/avg@1/hi": 0.7}
    assert {p.title: p.series(marked) for p in PANELS}["eval (avg@k, pass@k)"] == ["eval/digits/avg@1"]
    banded = _valid_png(draw({"run": marked}, tmp_path / "banded.png"))
    assert banded != _valid_png(draw({"run": plain}, tmp_path / "plain.png"))

    def event(step: int, signal: str, action: str) -> dict[str, Any]:  # as the guards write them
        return Event(signal, step, step - 2, action, {"x": 0.9}, 0.5, 3).row()

    marked[2]["guards"] = [event(3, "repetition", "warn")]
    marked[4]["guards"] = [event(5, "truncation", "rollback"), event(5, "entropy", "stop")]
    expected = [(3, "repetition", "warn"), (5, "truncation", "rollback"), (5, "entropy", "stop")]
    assert events(marked) == expected
    assert _valid_png(draw({"run": marked}, tmp_path / "events.png")) != banded


def test_a_run_writes_curves_at_each_checkpoint_and_at_the_end(run_config, monkeypatch) -> None:
    monkeypatch.setattr("rltrain.recorder.CURVES_SPACING", 0.0)  # no drawing held back (test_recorder)
    seen: dict[int, bytes | None] = {}

    def on_step(step: int, metrics: dict[str, Any]) -> None:  # before this step's own checkpoint
        path = Path(cfg.run.output_dir) / "curves" / "curves.png"
        seen[step] = path.read_bytes() if path.exists() else None

    cfg = parse_config(run_config(max_steps=3, checkpoints={"interval": 2}, run__id="curves"))
    run = train(cfg, on_step=on_step)
    assert seen[1] is None and seen[2] is None  # nothing before the first checkpoint
    assert seen[3] is not None and seen[3].startswith(PNG)  # step 2's checkpoint drew it
    final = _valid_png(run.run_dir / "curves.png")
    assert final != seen[3]  # redrawn at the end, with step 3
    drawn = (run.run_dir / "curves.png").stat().st_mtime_ns
    run.write_curves()  # no step since: not drawn again
    assert (run.run_dir / "curves.png").stat().st_mtime_ns == drawn


def test_robust_limits_put_far_outliers_off_scale_and_nothing_else() -> None:
    # nine steps at 100 tok/s and one at 2M (a rate over a wait of ~0 s): quartiles flat at 100, so the
    # spread is half the median (50), the fences -50 and 250, and the range kept is 100 padded by 5%
    assert robust_limits([100.0] * 9 + [2.0e6]) == Limits(95.0, 105.0, 1)
    assert robust_limits([1.0, 2.0, 3.0, 4.0, 5.0, 8.0]) is None  # nothing far out
    assert robust_limits([0.0] * 10 + [1.0, 1.0]) is None  # a reward that took off is the signal
    assert robust_limits([1.0, 1.0, 50.0, 60.0, 70.0]) is None  # 2 of 5 are too many to call outliers
    assert robust_limits([1.0, float("nan"), 2.0]) is None  # too few points to judge


def test_the_tokens_per_second_panel_keeps_one_readable_scale() -> None:
    from matplotlib.figure import Figure

    rows = _rows(0.1)
    rows[2]["gen_tok_s"] = 2.0e6  # one rate far out: the others stay on a scale that shows them
    ax = Figure().subplots()
    _draw_panel(ax, next(p for p in PANELS if p.title == "tokens/s"), {"run": rows}, ["C0"])
    # 15 points (80 x4, 100 x5, 300 x5, 2M): quartiles 80 and 300, fences -580 and 960; kept 80-300 +- 11
    assert ax.get_ylim() == (69.0, 311.0) and ax.get_title() == "tokens/s (1 off scale)"
    edge = [line.get_ydata()[0] for line in ax.get_lines() if line.get_marker() == "^"]
    assert edge == [311.0]  # the outlier is marked on the top edge, not hidden
    plain = Figure().subplots()
    _draw_panel(plain, next(p for p in PANELS if p.title == "tokens/s"), {"run": _rows(0.1)}, ["C0"])
    assert plain.get_title() == "tokens/s" and plain.get_ylim()[1] < 400
