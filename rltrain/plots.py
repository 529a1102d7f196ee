"""Training curves as a PNG: `runs/<id>/curves.png`, written at checkpoints and at the end of a
run, and `python -m rltrain runs plot ID [ID ...]`, which overlays several runs to compare configs.

matplotlib with the Agg backend: no display needed, and imported only when a plot is drawn (it costs
about half a second).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rltrain.record import read_jsonl

log = logging.getLogger("rltrain")
Rows = list[dict[str, Any]]


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


def _rewards(rows: Rows) -> list[str]:
    """The mean reward, and each environment's when several train together."""
    per_env = _matching("env/", "/reward_mean")(rows)
    return ["reward_mean"] + (per_env if len(per_env) > 1 else [])


PANELS = (
    Panel("reward", _rewards),
    Panel("eval (avg@k, pass@k)", _matching("eval/")),
    Panel("loss", _present("loss")),
    Panel("KL / mismatch", _present("kl", "mismatch_kl")),
    Panel("completion length (tokens)", _present("completion_len_mean")),
    Panel("tokens/s", _present("tok_s", "gen_tok_s", "train_tok_s")),
)


def _points(rows: Rows, key: str) -> tuple[list[int], list[float]]:
    pts = [(int(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


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
    styles = ("-", "--", ":", "-.")
    for ax, panel in zip(axes.flat, PANELS, strict=True):
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        for i, (label, rows) in enumerate(runs.items()):
            for j, key in enumerate(panel.series(rows)):
                steps, values = _points(rows, key)
                name = key if len(runs) == 1 else f"{label}: {key}"
                style = styles[j % len(styles)]
                ax.plot(steps, values, style, color=colours[i % len(colours)], label=name, marker=".")
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(" vs ".join(runs) if len(runs) > 1 else next(iter(runs)))
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    os.replace(tmp, out)  # a reader (or a kill) never sees half a PNG
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
