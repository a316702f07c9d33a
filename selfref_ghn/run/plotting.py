"""Figures of a run: return over generations with inverted intervals shaded, and beneath it the
population's mutation rate (mean and range) and diversity.

``selfref-ghn plot DIR`` draws the figure from a results folder's ``metrics.csv`` at any time:
while the run goes on, or after it was interrupted (a finished run already has ``fitness.png``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from selfref_ghn.run.metrics import read_rows, recovery_curves

# the columns the figure and the summary need
PLOTTED = (
    "generation", "best_fitness", "mean_fitness", "mutation_rate_mean", "mutation_rate_min",
    "mutation_rate_max", "diversity",
)  # fmt: skip


def _shade(ax, intervals: Sequence[Sequence[int]]) -> None:
    for i, (start, end) in enumerate(intervals):
        ax.axvspan(
            start, end, color="tab:red", alpha=0.12, lw=0, label="inverted" if i == 0 else None
        )


def plot_run(
    metrics: Mapping[str, np.ndarray],
    path: str | Path,
    switch_intervals: Sequence[Sequence[int]] = (),
    title: str = "",
    smooth: int = 1,
) -> Path:
    """Write ``fitness.png``-style figure from metric columns.

    Args:
        metrics: columns ``generation, best_fitness, mean_fitness, mutation_rate_mean,
            mutation_rate_min, mutation_rate_max, diversity``.
        path: output PNG path.
        switch_intervals: inverted intervals to shade.
        title: figure title.
        smooth: with ``smooth > 1``, best and mean return are drawn as trailing means over
            ``smooth`` generations, over the raw curves drawn faintly.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = np.asarray(metrics["generation"])
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True, height_ratios=(2.2, 1, 1))
    ax = axes[0]
    _shade(ax, switch_intervals)
    curves = (("best_fitness", "best", "tab:blue"), ("mean_fitness", "mean", "tab:orange"))
    for key, label, color in curves:
        y = np.asarray(metrics[key], dtype=np.float64)
        if smooth > 1:
            ax.plot(g, y, color=color, alpha=0.25, lw=0.6)
            y = trailing_mean(y, smooth)
            label = f"{label} ({smooth}-generation mean)"
        ax.plot(g, y, label=label, color=color)
    ax.set_ylabel("return")
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    ax = axes[1]
    _shade(ax, switch_intervals)
    ax.fill_between(
        g, metrics["mutation_rate_min"], metrics["mutation_rate_max"], alpha=0.3, color="tab:green"
    )
    ax.plot(g, metrics["mutation_rate_mean"], color="tab:green")
    ax.set_ylabel("mutation rate")
    ax.set_ylim(0, 1.02)
    ax = axes[2]
    _shade(ax, switch_intervals)
    ax.plot(g, metrics["diversity"], color="tab:purple")
    ax.set_ylabel("diversity")
    ax.set_xlabel("generation")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def trailing_mean(y: Sequence[float] | np.ndarray, n: int) -> np.ndarray:
    """Mean of each value and the ``n - 1`` before it (fewer at the start).

    Example:
        >>> trailing_mean([0.0, 2.0, 4.0, 6.0], 2).tolist()
        [0.0, 1.0, 3.0, 5.0]
    """
    y = np.asarray(y, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(1, len(y) + 1)
    lo = np.maximum(i - n, 0)
    return (c[i] - c[lo]) / (i - lo)


def summary_lines(metrics: Mapping[str, np.ndarray], switch_intervals: Sequence[Sequence[int]]):
    """Lines describing a run's metrics so far: generations, wall time, the latest returns and
    rates, and for each switch already played the recovery of the best return
    (:func:`selfref_ghn.run.metrics.recovery_curves`, 10-generation level): the generations until
    it first reached 50/90/100% of its level (as in ``summary.json``), and until it held them
    for 10 generations (as in ``selfref-ghn compare``). "-": not yet."""
    g = metrics["generation"]
    n = len(g)
    last = slice(max(0, n - 10), n)
    lines = [f"generations 0-{int(g[-1])} ({n} rows)"]
    if "wall_time" in metrics:
        lines[0] += f", wall time {metrics['wall_time'][-1]:.0f} s"
    if "env_steps" in metrics:
        lines[0] += f", {metrics['env_steps'][-1] / 1e6:.1f} M environment steps"
    best = metrics["best_fitness"][last]
    lines.append(
        f"last {len(best)} generations (means): best {best.mean():.2f} (max {best.max():.2f}), "
        f"mean {metrics['mean_fitness'][last].mean():.2f}, "
        f"rate {metrics['mutation_rate_mean'][last].mean():.3f}"
    )
    points = sorted({int(p) for iv in switch_intervals for p in iv if 0 < int(p) < n})
    keys = ("gens_to_50", "gens_to_90", "gens_to_100")

    def gens(row) -> str:
        return "/".join("-" if np.isnan(row[k]) else str(int(row[k])) for k in keys)

    first = recovery_curves(metrics, points, curves=("best_fitness",), hold=1)
    held = recovery_curves(metrics, points, curves=("best_fitness",))
    for r1, r in zip(first, held, strict=True):
        head = f"switch at {r['switch']}: best before {r['level']:.2f}"
        if r["level"] <= 0:
            lines.append(f"{head} (not positive: recovery is measured against a positive level)")
            continue
        lines.append(
            f"{head}; generations until back to 50/90/100% of it: first reached "
            f"{gens(r1)}, held 10 generations {gens(r)}"
        )
    return lines


def cmd_plot(args: argparse.Namespace) -> int:
    """``selfref-ghn plot DIR``: draw a run's figure from its metrics.csv and print a summary."""
    from selfref_ghn.config import ConfigError
    from selfref_ghn.run.folder import load_run_config, method_label

    run = Path(args.dir)
    if args.smooth < 1:
        raise ConfigError("--smooth", args.smooth, "a whole number of generations >= 1")
    cfg = load_run_config(run, "DIR")
    try:
        metrics, bad_line, after = read_rows(run / "metrics.csv")
    except OSError as e:
        raise ConfigError(
            "DIR", str(run), f"a results folder with a readable metrics.csv ({e})"
        ) from None
    if not metrics:
        raise ConfigError("DIR", str(run), "a results folder whose metrics.csv has rows")
    missing = [k for k in PLOTTED if k not in metrics]
    if missing:
        raise ConfigError(
            "metrics.csv", str(run / "metrics.csv"), f"a header with the columns {missing}"
        )
    if bad_line is not None and after:  # not just the row a running process is writing
        print(
            f"selfref-ghn: {run / 'metrics.csv'}: line {bad_line} is malformed; it and the "
            f"{after} lines after it are left out",
            file=sys.stderr,
        )
    intervals = [tuple(iv) for iv in cfg.switch_intervals]
    for line in summary_lines(metrics, intervals):
        print(line)
    out = args.out or run / "fitness.png"
    plot_run(
        metrics,
        out,
        intervals,
        title=f"{method_label(cfg)} on {cfg.env_id} (seed {cfg.seed})",
        smooth=args.smooth,
    )
    print(f"figure: {out}")
    return 0


def register(subparsers) -> None:
    """Add ``plot DIR [--out PNG] [--smooth N]`` to the command line."""
    p = subparsers.add_parser(
        "plot", help="draw a run's figure from its metrics.csv (also while it runs)"
    )
    p.add_argument("dir", type=Path, help="a results folder")
    p.add_argument("--out", type=Path, default=None, help="figure path (DIR/fitness.png)")
    p.add_argument(
        "--smooth", type=int, default=1, metavar="N", help="draw returns as N-generation means"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.set_defaults(func=cmd_plot)
