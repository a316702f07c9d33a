"""Reproduce the paper's experiments: ``python experiments/reproduce.py --scale smoke|cpu|full
[--out DIR] [--only cartpole,lunarlander,ant] [--methods srghn,open_es,...]``.

For each experiment of ``experiments/presets.py`` this runs every method on every seed through
the comparison harness (:func:`selfref_ghn.run_comparison`: one ordinary results folder per run
under ``DIR/<experiment>/<method>/seed<k>``, each with its config, git hash and metrics), then
writes into ``DIR/<experiment>/``:

* ``returns.png``: best and mean return over generations per method, switches shaded;
* ``rates.png``: the mutation-rate distribution of the SR-GHN population over generations
  (a heatmap of the per-parent rates stored in ``lineage.bin``, seed 0) and the population's
  min/mean/max rate for SR-GHN and its ablations (``metrics.csv``);
* ``diversity.png``: population diversity (mean per-parameter std) over generations per method;
* ``recovery.md`` / ``recovery.csv``: the recovery-metrics table.

``--report-only`` runs nothing and reports on the runs that have finished (e.g. while a long
reproduction is still going).

``DIR/REPORT.md`` gathers, per experiment, the command, git hash, wall time and the tables.
An experiment whose environment is not registered yet is skipped with a message. Runs that
finished earlier are read back, so an interrupted reproduction continues where it stopped.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # `experiments` importable when run as a script

from experiments.presets import EXPERIMENTS, SCALES  # noqa: E402
from selfref_ghn import envs  # noqa: E402
from selfref_ghn.config import Config  # noqa: E402
from selfref_ghn.prng import KEY_VERSION, KEY_VERSIONS  # noqa: E402
from selfref_ghn.run import lineage as lineage_lib  # noqa: E402
from selfref_ghn.run.compile_cache import add_compile_cache_option, enable_compile_cache  # noqa: E402
from selfref_ghn.run.folder import git_hash  # noqa: E402
from selfref_ghn.tools.compare import ABLATIONS, run_comparison  # noqa: E402

SRGHN_METHODS = ("srghn",) + ABLATIONS


def _shade(ax, intervals: Sequence[Sequence[int]]) -> None:
    for i, (start, end) in enumerate(intervals):
        ax.axvspan(start, end, color="0.88", lw=0, label="inverted" if i == 0 else None)


def plot_rates(
    curves: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    run_root: Path,
    config: Config,
    path: Path,
) -> Path | None:
    """Mutation-rate distribution over generations (SR-GHN lineage) and per-method bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in SRGHN_METHODS if m in curves]
    if not methods:
        return None
    fig, axes = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, height_ratios=(1.2, 1), layout="constrained"
    )
    ax = axes[0]
    seed0 = min(curves[methods[0]])
    recs = lineage_lib.read(
        run_root / methods[0] / f"seed{seed0}" / lineage_lib.FILE, config.population_size
    )
    if len(recs):
        bins = np.linspace(0.0, 1.0, 41)
        hist = np.stack([np.histogram(r, bins=bins)[0] for r in recs["parent_rate"]], 1)
        frac = hist / np.maximum(hist.sum(0, keepdims=True), 1)
        g = recs["generation"]
        im = ax.imshow(
            frac, origin="lower", aspect="auto", cmap="viridis",
            extent=(g[0] - 0.5, g[-1] + 0.5, 0.0, 1.0),
        )  # fmt: skip
        fig.colorbar(im, ax=list(axes), label="fraction of parents", pad=0.01)
        for start, end in config.switch_intervals:
            ax.axvline(start, color="w", ls="--", lw=1)
            ax.axvline(end, color="w", ls=":", lw=1)
    ax.set_ylabel("parent mutation rate")
    ax.set_title(f"{methods[0]}, seed {seed0}: distribution of the parents' mutation rates")
    ax = axes[1]
    _shade(ax, config.switch_intervals)
    colors = plt.get_cmap("tab10").colors
    for k, m in enumerate(methods):
        runs = list(curves[m].values())
        n = min(len(r["mutation_rate_mean"]) for r in runs)
        mean = np.mean([r["mutation_rate_mean"][:n] for r in runs], 0)
        lo = np.mean([r["mutation_rate_min"][:n] for r in runs], 0)
        hi = np.mean([r["mutation_rate_max"][:n] for r in runs], 0)
        ax.plot(np.arange(n), mean, color=colors[k], label=m)
        ax.fill_between(np.arange(n), lo, hi, color=colors[k], alpha=0.12, lw=0)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("mutation rate\n(mean; band min-max)")
    ax.set_xlabel("generation")
    ax.legend(fontsize=8, ncol=len(methods) + 1, loc="lower right")
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_diversity(
    curves: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    switch_intervals: Sequence[Sequence[int]],
    path: Path,
) -> Path:
    """Population diversity per method (mean over seeds), log scale, switches shaded.

    SR-GHN variants measure diversity in GHN-parameter space, the baselines in policy-parameter
    space, so compare shapes (rise after a switch, fall on convergence), not levels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.8))
    _shade(ax, switch_intervals)
    colors = plt.get_cmap("tab10").colors
    for k, (m, runs) in enumerate(curves.items()):
        n = min(len(r["diversity"]) for r in runs.values())
        y = np.mean([r["diversity"][:n] for r in runs.values()], 0)
        style = "--" if m in ABLATIONS else "-"
        ax.plot(np.arange(n), y, style, color=colors[k % 10], lw=2 if m == "srghn" else 1.2,
                label=m)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("generation")
    ax.set_ylabel("diversity (mean param. std)")
    ax.legend(fontsize=7, ncol=5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def final_table(curves: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]) -> str:
    """Markdown: per method, final best/mean return (mean over seeds) and the last 10 gens'."""
    lines = [
        "| method | seeds | final best | final mean | best, last 10 gens | mean, last 10 gens |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, runs in curves.items():
        rs = list(runs.values())
        fb = np.mean([r["best_fitness"][-1] for r in rs])
        fm = np.mean([r["mean_fitness"][-1] for r in rs])
        lb = np.mean([r["best_fitness"][-10:].mean() for r in rs])
        lm = np.mean([r["mean_fitness"][-10:].mean() for r in rs])
        lines.append(f"| {m} | {len(rs)} | {fb:.1f} | {fm:.1f} | {lb:.1f} | {lm:.1f} |")
    return "\n".join(lines)


def run_experiment(
    name: str,
    scale: str,
    out: Path,
    methods: Sequence[str] | None,
    quiet: bool,
    report_only: bool = False,
    key_version: int | None = None,
) -> dict | None:
    """Run one experiment at ``scale`` into ``out/name``; ``None`` if it was skipped.
    ``key_version`` (default: the library's) picks how random streams are derived
    (:mod:`selfref_ghn.prng`); 1 repeats runs recorded before version 2."""
    exp = EXPERIMENTS[name]
    if exp.env_id not in envs.registered():
        print(f"[{name}] skipped: environment {exp.env_id!r} is not registered in this version")
        return None
    config = exp.config(scale)
    if key_version is not None:
        config = config.replace(key_version=key_version).validate()
    methods = list(methods or exp.methods)
    seeds = exp.seeds[scale]
    run_root = out / name
    print(
        f"[{name}] {config.env_id}: P={config.population_size}, horizon {config.horizon}, "
        f"{config.generations} generations, switches {list(config.switch_intervals)}; "
        f"methods {', '.join(methods)}; seeds {list(seeds)}",
        flush=True,
    )
    t0 = time.perf_counter()
    curves = run_comparison(
        config, methods, seeds, run_root, progress=not quiet, report_only=report_only
    )
    if not curves:
        print(f"[{name}] no finished runs to report")
        return None
    wall = time.perf_counter() - t0
    figures = {"returns": run_root / "returns.png"}
    rates = plot_rates(curves, run_root, config, run_root / "rates.png")
    if rates:
        figures["rates"] = rates
    diversity = plot_diversity(curves, config.switch_intervals, run_root / "diversity.png")
    figures["diversity"] = diversity
    table = final_table(curves)
    (run_root / "final.md").write_text(table + "\n")
    print(f"[{name}] done in {wall:.0f} s: {run_root}", flush=True)
    return {
        "name": name,
        "config": config,
        "wall": wall,
        "figures": figures,
        "table": table,
        "curves": curves,
    }


def write_report(results: list[dict], scale: str, out: Path, argv: Sequence[str]) -> Path:
    """``out/REPORT.md``: command, git hash, and per experiment its figures and tables."""
    lines = [
        f"# Reproduction at scale `{scale}`",
        "",
        f"Command: `python experiments/reproduce.py {' '.join(argv)}`  ",
        f"git {git_hash()}",
        "",
    ]
    for r in results:
        rel = {k: v.relative_to(out).as_posix() for k, v in r["figures"].items()}
        lines += [f"## {r['name']} ({r['config'].env_id}), {r['wall']:.0f} s", ""]
        lines += [f"![{k}]({v})" for k, v in rel.items()]
        seeds = sorted({s for runs in r["curves"].values() for s in runs})
        lines += ["", f"Final returns (mean over seeds {seeds}):", "", r["table"], ""]
        md = out / r["name"] / "recovery.md"
        if md.exists() and r["config"].switch_intervals:
            lines += [md.read_text(), ""]
    path = out / "REPORT.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=SCALES, required=True)
    p.add_argument("--out", type=Path, default=None, help="default results/reproduce-<scale>")
    p.add_argument("--only", default=",".join(EXPERIMENTS), help="e.g. cartpole,lunarlander")
    p.add_argument("--methods", default=None, help="default: SR-GHN, 5 baselines, 3 ablations")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--key-version",
        type=int,
        choices=KEY_VERSIONS,
        default=None,
        help=f"how random streams are derived (default {KEY_VERSION}; 1: as the runs recorded "
        "before version 2, e.g. the figures of docs/results.md)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="run nothing; report the finished runs"
    )
    add_compile_cache_option(p)
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        p.error(f"unknown experiment(s) {unknown}; known: {', '.join(EXPERIMENTS)}")
    methods = args.methods.split(",") if args.methods else None
    out = args.out or ROOT / "results" / f"reproduce-{args.scale}"
    out.mkdir(parents=True, exist_ok=True)
    enable_compile_cache(args.compile_cache)
    t0 = time.perf_counter()
    results = [
        r
        for n in names
        if (
            r := run_experiment(
                n, args.scale, out, methods, args.quiet, args.report_only, args.key_version
            )
        )
    ]
    report = write_report(results, args.scale, out, argv)
    print(f"report: {report} ({math.ceil(time.perf_counter() - t0)} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
