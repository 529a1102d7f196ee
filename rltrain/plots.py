"""Training curves as a PNG: `runs/<id>/curves.png`, written at checkpoints and at the end of a
run, and `python -m rltrain runs plot ID [ID ...]`, which overlays several runs to compare configs.

matplotlib with the Agg backend: no display needed, and imported only when a plot is drawn (it costs
about half a second).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rltrain.fsutil import atomic_path
from rltrain.record import read_jsonl

log = logging.getLogger("rltrain")
Rows = list[dict[str, Any]]
BOUNDS = ("/lo", "/hi")  # an eval metric's 95% interval: `<key>/lo` and `<key>/hi` in the same row
EVENT_STYLE = {"warn": ":", "rollback": "--", "stop": "-"}  # guard events (rows' "guards" lists), by action


@dataclass(frozen=True)
class Panel:
    title: str
    series: Callable[[Rows], list[str]]  # the metric keys this panel draws, given a run's rows


def _present(*keys: str) -> Callable[[Rows], list[str]]:
    return lambda rows: [k for k in keys if any(k in r for r in rows)]


def _matching(prefix: str, suffix: str = "") -> Callable[[Rows], list[str]]:
    def keys(rows: Rows) -> list[str]:
        found = {k for r in rows for k in r if k.startswith(prefix) and k.endswith(suffix)}
        return sorted(found)

    return keys


def _evals(rows: Rows) -> list[str]:
    """avg@k and pass@k per environment; their intervals' bounds (`<key>/lo`, `/hi`) are drawn as bands."""
    return [k for k in _matching("eval/")(rows) if not k.endswith(BOUNDS)]


def _rewards(rows: Rows) -> list[str]:
    """The mean reward, and each environment's when several train together."""
    per_env = _matching("env/", "/reward_mean")(rows)
    return ["reward_mean"] + (per_env if len(per_env) > 1 else [])


PANELS = (
    Panel("reward", _rewards),
    Panel("eval (avg@k, pass@k)", _evals),
    Panel("loss", _present("loss")),
    Panel("KL / mismatch", _present("kl", "mismatch_kl", "stale_kl")),
    Panel("completion length (tokens)", _present("completion_len_mean")),
    # sampling (per second of sampling) and training (per second of update) on one scale; tok_s is the
    # whole step's rate
    Panel("tokens/s", _present("tok_s", "gen_tok_s", "train_tok_s")),
)
FENCE = 3.0  # Tukey's far-out fence: values beyond FENCE interquartile ranges of the quartiles
FEW = 0.25  # at most this share of a panel's points is ever put off scale


@dataclass(frozen=True)
class Limits:
    lo: float
    hi: float
    off: int  # points beyond them (drawn as markers on the edge)


def robust_limits(values: list[float]) -> Limits | None:
    """Y limits that keep a panel readable when a few points are far out (a first step that compiles,
    a spike): the range of the values within Tukey's far-out fences, padded by 5%. None: no point is
    far out (or too many are to call them outliers), matplotlib's own limits show them all."""
    ordered = sorted(v for v in values if math.isfinite(v))
    if len(ordered) < 4:
        return None
    q1, q3 = ordered[len(ordered) // 4], ordered[(3 * len(ordered)) // 4]
    spread = q3 - q1 or 0.5 * abs(ordered[len(ordered) // 2])  # flat quartiles: half the median
    if spread == 0:
        return None  # mostly one value, 0: the others are the signal (a reward that took off)
    lo, hi = q1 - FENCE * spread, q3 + FENCE * spread
    kept = [v for v in ordered if lo <= v <= hi]
    off = len(ordered) - len(kept)
    if off == 0 or off > FEW * len(ordered):
        return None
    pad = 0.05 * (kept[-1] - kept[0]) or 0.05 * abs(kept[0]) or 1.0
    return Limits(kept[0] - pad, kept[-1] + pad, off)


def _points(rows: Rows, key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _band(rows: Rows, key: str) -> tuple[list[int], list[float], list[float]]:
    """The steps where `key` has its interval, and the interval's bounds."""
    lo, hi = f"{key}{BOUNDS[0]}", f"{key}{BOUNDS[1]}"
    pts = [(int(r["step"]), float(r[lo]), float(r[hi])) for r in rows if _is_number(r.get(lo), r.get(hi))]
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def _is_number(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) for v in values)


def events(rows: Rows) -> list[tuple[int, str, str]]:
    """(step, signal, action) of every guard event in a run's rows."""
    found = [(r["step"], e) for r in rows for e in r.get("guards") or [] if isinstance(e, dict)]
    return [(int(step), str(e.get("signal", "?")), str(e.get("action", "warn"))) for step, e in found]


def _mark_events(axes: Any, rows: Rows, colour: str) -> None:
    """A vertical line per guard event on every panel (dotted: warn, dashed: rollback, solid: stop),
    named on the first panel."""
    for step, signal, action in events(rows):
        for ax in axes.flat:
            ax.axvline(step, color=colour, linestyle=EVENT_STYLE.get(action, ":"), alpha=0.6, linewidth=1)
        axes.flat[0].annotate(
            f"{signal} ({action})",
            xy=(step, 0.98),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=6,
            ha="right",
            va="top",
        )


def _draw_panel(ax: Any, panel: Panel, runs: dict[str, Rows], colours: list[str]) -> None:
    styles = ("-", "--", ":", "-.")
    ax.set_title(panel.title)
    ax.set_xlabel("step")
    drawn: list[tuple[int, float, str]] = []
    for i, (label, rows) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        for j, key in enumerate(panel.series(rows)):
            steps, values = _points(rows, key)
            drawn += [(step, value, colour) for step, value in zip(steps, values, strict=True)]
            name = key if len(runs) == 1 else f"{label}: {key}"
            ax.plot(steps, values, styles[j % len(styles)], color=colour, label=name, marker=".")
            band_steps, lo, hi = _band(rows, key)
            if band_steps:
                ax.fill_between(band_steps, lo, hi, color=colour, alpha=0.15, linewidth=0)
    if (limits := robust_limits([v for _, v, _ in drawn])) is not None:
        _off_scale(ax, limits, drawn)
        ax.set_title(f"{panel.title} ({limits.off} off scale)")
    if ax.has_data():
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _off_scale(ax: Any, limits: Limits, points: list[tuple[int, float, str]]) -> None:
    """Limits that ignore the outliers; each outlier a triangle on the edge it lies beyond."""
    ax.set_ylim(limits.lo, limits.hi)
    for step, value, colour in points:
        if value > limits.hi:
            ax.plot([step], [limits.hi], "^", color=colour, clip_on=False)
        elif value < limits.lo:
            ax.plot([step], [limits.lo], "v", color=colour, clip_on=False)


def draw(runs: dict[str, Rows], out: Path) -> Path:
    """One PNG with a panel per metric family; each run (label -> metrics rows) in its own colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # fixed margins: matplotlib's constrained layout took 35% of each drawing (curves at a checkpoint
    # were a third of the trainer thread's time on the tiny demo; bench_step_breakdown)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.07, top=0.92, wspace=0.22, hspace=0.3)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, PANELS, strict=True):
        _draw_panel(ax, panel, runs, colours)
    for i, rows in enumerate(runs.values()):
        _mark_events(axes, rows, colours[i % len(colours)])
    fig.suptitle(" vs ".join(runs) if len(runs) > 1 else next(iter(runs)))
    with atomic_path(out) as tmp:  # a reader (or a kill) never sees half a PNG
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return out


def write_curves(run_dir: Path) -> Path | None:
    """runs/<id>/curves.png from the run's metrics; a plotting failure is logged, never raised (a
    picture must not fail a training run)."""
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        return None
    try:
        return draw({run_dir.name: rows}, run_dir / "curves.png")
    except Exception as err:  # matplotlib missing or broken: the run goes on
        log.info("notice: curves.png not written (%s: %s)", type(err).__name__, err)
        return None


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    """Several runs overlaid in one PNG."""
    runs = {d.name: read_jsonl(d / "metrics.jsonl") for d in run_dirs}
    empty = [name for name, rows in runs.items() if not rows]
    if empty:
        raise ValueError(f"no metrics yet for run(s) {', '.join(empty)}")
    return draw(runs, out)
