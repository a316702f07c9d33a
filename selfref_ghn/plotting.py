"""Figures of a run: return over generations with inverted intervals shaded, and beneath it the
population's mutation rate (mean and range) and diversity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


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
) -> Path:
    """Write ``fitness.png``-style figure from metric columns.

    Args:
        metrics: columns ``generation, best_fitness, mean_fitness, mutation_rate_mean,
            mutation_rate_min, mutation_rate_max, diversity``.
        path: output PNG path.
        switch_intervals: inverted intervals to shade.
        title: figure title.

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
    ax.plot(g, metrics["best_fitness"], label="best", color="tab:blue")
    ax.plot(g, metrics["mean_fitness"], label="mean", color="tab:orange")
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
