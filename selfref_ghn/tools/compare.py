"""``selfref-ghn compare``: SR-GHNs, their ablations and evosax baselines on one task (DESIGN §1,
§2 "Ablations", §3).

``selfref-ghn compare PRESET --methods srghn,open_es,cma_es,simple_ga,gesmr_ga,samr_ga
[,fixed_rate,frozen_head,external] --seeds 0-4 [--out DIR] [--set k=v]`` runs every method on
every seed through the same harness (:func:`selfref_ghn.run.loop.evolve`, one normal results
folder per run under ``DIR/<method>/seed<k>``), then writes into ``DIR``:

* ``recovery.csv``: per method, switch, curve (best and mean return) and recovery metric
  (:func:`selfref_ghn.run.metrics.recovery_curves`, ``hold = 10``), the mean over seeds, its 95%
  t-interval half-width, and how many seeds reached that threshold at all;
* ``recovery.md``: the same as markdown tables, one per switch and curve;
* ``returns.png``: best and mean return over generations per method (mean over seeds and its
  95% band), inverted intervals shaded.

``--recovery normalised`` measures recovery from the task's floor return, measured once
(``--floor random|zero``) or given (``--floor -1200``) and written into the report
(:func:`selfref_ghn.run.metrics.recovery_floor`); the default, ``raw``, from zero.

Methods: ``srghn`` and the ablations ``fixed_rate``, ``frozen_head``, ``external``
(``Config.mutation_mode``); the baselines of :data:`selfref_ghn.config.METHODS`; or
any
evosax algorithm by its registry name; or ``ppo``, rejax's PPO on the same switch schedule
and environment-step budget (:mod:`selfref_ghn.tools.ppo`). A finished run (its
``summary.json`` exists) is read back rather than run again, so an interrupted comparison
continues where it stopped.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.run import metrics as run_metrics
from selfref_ghn.run.metrics import FLOOR_POLICIES, RECOVERY_DEFINITIONS, read_csv, recovery_curves

ABLATIONS = ("fixed_rate", "frozen_head", "external")
DEFAULT_METHODS = ("srghn", "open_es", "cma_es", "simple_ga", "gesmr_ga", "samr_ga")
RECOVERY_HOLD = 10
_STATS = ("level", "drop", "gens_to_50", "gens_to_90", "gens_to_100", "auc")


def method_config(config: Config, method: str) -> Config:
    """``config`` set up for one method of the comparison.

    Args:
        config: the shared task configuration (preset plus ``--set``).
        method: ``srghn``, an ablation (``fixed_rate``, ``frozen_head``, ``external``), a
            baseline short name (``open_es``...) or an evosax algorithm name.

    Returns:
        The validated config (``method`` and ``mutation_mode`` set).
    """
    if method == "srghn":
        return config.replace(method="srghn", mutation_mode="self").validate()
    if method in ABLATIONS:
        return config.replace(method="srghn", mutation_mode=method).validate()
    if method == "ppo":  # rejax's PPO (selfref_ghn.tools.ppo): its settings checked here
        from selfref_ghn.tools import ppo

        return ppo.create(config.replace(method="ppo")).config
    return config.replace(method=method).validate()


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> ``[0, 1, 2, 3, 4]``; ``"0,3,7"`` and mixtures like ``"0-2,9"`` work too."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError("--seeds", text, "seeds like 0-4 or 0,1,5") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError("--seeds", text, "at least one non-negative seed")
    return list(dict.fromkeys(seeds))


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names, each checked (raises :class:`ConfigError`)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ConfigError("--methods", text, "at least one method")
    for m in methods:
        if m != "srghn" and m not in ABLATIONS and m != "ppo":
            from selfref_ghn.config import algorithm_class

            try:
                algorithm_class(m)
            except ConfigError as e:
                raise ConfigError("--methods", m, e.allowed) from None
    return list(dict.fromkeys(methods))


def parse_floor(text: str | float) -> str | float:
    """``--floor``: a policy to measure the floor with (``random``, ``zero``) or a number."""
    if isinstance(text, str) and text.strip() in FLOOR_POLICIES:
        return text.strip()
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = float("nan")
    if not math.isfinite(value):
        raise ConfigError("--floor", text, f"one of {', '.join(FLOOR_POLICIES)}, or a number")
    return value


def run_comparison(
    config: Config,
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    progress: bool | TextIO = True,
    report_only: bool = False,
    recovery: str = "raw",
    floor: str | float = "random",
    loggers: str | Sequence[str] | None = None,
    floor_info: Mapping[str, Any] | None = None,
) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """Run (or read back) every method on every seed, then write the table and figure.

    Runs go seed by seed (every method on seed 0, then on seed 1...), so an interrupted
    comparison has all methods on its first seeds.

    Args:
        config: the shared task configuration.
        methods: method names (see :func:`method_config`).
        seeds: run seeds.
        out_dir: the comparison's results folder.
        progress: print progress lines (``True``: stdout; or a stream; ``False``: quiet).
        report_only: run nothing; report on the runs that have finished.
        recovery: ``raw`` (fraction of the pre-switch return) or ``normalised`` (from the
            floor return, measured once before any run;
            :func:`selfref_ghn.run.metrics.recovery_floor`).
        floor: for ``normalised``: ``random`` or ``zero`` (the policy whose return is the
            floor) or a known floor return.
        loggers: trackers besides ``metrics.csv`` (``wandb``, ``tensorboard``), grouped by
            ``out_dir`` (:mod:`selfref_ghn.run.tracking`); a missing extra fails before any run.
        floor_info: with a known ``floor``, how it was found (e.g. measured earlier by
            :func:`selfref_ghn.run.metrics.recovery_floor`), recorded in the report.

    Returns:
        ``curves[method][seed]``: each run's metric columns.

    Example:
        >>> cfg = presets.get("quick")  # doctest: +SKIP
        >>> run_comparison(cfg, ["srghn", "open_es"], [0, 1], "results/cmp")  # doctest: +SKIP
    """
    from selfref_ghn.evolution.baselines import make_evolution
    from selfref_ghn.run.folder import load_run_config, run_info
    from selfref_ghn.run.loop import evolve
    from selfref_ghn.run.resume import RESUME_MAY_CHANGE, check_resumable
    from selfref_ghn.run.tracking import resolve

    if recovery not in RECOVERY_DEFINITIONS:
        raise ConfigError("--recovery", recovery, f"one of {', '.join(RECOVERY_DEFINITIONS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stream = sys.stdout if progress is True else (progress or None)
    configs = {m: method_config(config, m) for m in methods}  # validate all before any run
    track = {"loggers": resolve(loggers), "tracking_root": out}
    known = floor_info if recovery == "normalised" and floor_info is not None else None
    floor_value, floor_info = run_metrics.recovery_floor(config, recovery, parse_floor(floor))
    if known is not None and floor_value is not None:
        floor_info = {**known, "floor": floor_value}
    if stream and floor_value is not None:
        print(f"[floor] {run_metrics.floor_text(floor_info)}", file=stream, flush=True)
    (out / "compare.json").write_text(
        json.dumps(
            {
                "methods": list(methods),
                "seeds": list(seeds),
                "config": config.to_dict(),
                "recovery_hold": RECOVERY_HOLD,
                "recovery": floor_info,
                "_run": run_info(),
            },
            indent=2,
            default=str,
        )
    )
    curves: dict[str, dict[int, dict[str, np.ndarray]]] = {m: {} for m in methods}
    for seed in seeds:
        for m in methods:
            cfg = configs[m].replace(seed=seed)
            run_dir = out / m / f"seed{seed}"
            if (run_dir / "summary.json").exists() and (run_dir / "metrics.csv").exists():
                # a finished run is read back only if it is the run asked for
                may_change = tuple(k for k in RESUME_MAY_CHANGE if k != "generations")
                stored = load_run_config(run_dir, "--out")
                check_resumable(stored, cfg, may_change=may_change, action="read back")
                metrics = read_csv(run_dir / "metrics.csv")
                if len(metrics.get("generation", ())) == cfg.generations:
                    curves[m][seed] = metrics
                    if stream:
                        print(f"[{m} seed {seed}] finished earlier: {run_dir}", file=stream)
                    continue
            if report_only:
                continue
            t0 = time.perf_counter()
            if m == "ppo":
                from selfref_ghn.tools import ppo

                _, metrics, summary = ppo.train(cfg, run_dir)
            else:
                _, metrics, summary = evolve(
                    cfg, run_dir, evo=make_evolution(cfg), progress=False, **track
                )
            curves[m][seed] = metrics
            if stream:
                print(
                    f"[{m} seed {seed}] {time.perf_counter() - t0:.0f} s (compile "
                    f"{summary['compile_time_s']:.0f} s), final best "
                    f"{summary['best_fitness_final']:.1f}: {run_dir}",
                    file=stream,
                    flush=True,
                )
    curves = {m: runs for m, runs in curves.items() if runs}
    write_report(curves, config.switch_windows, out, floor=floor_value, floor_info=floor_info)
    return curves


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def summarize(
    curves: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    switch_intervals: Sequence[Sequence[int]],
    hold: int = RECOVERY_HOLD,
    floor: float | None = None,
) -> list[dict[str, Any]]:
    """Recovery statistics over seeds: one row per method, switch, curve and statistic.

    ``mean`` and ``ci95`` (the t-interval half-width) are over the seeds where the value is
    defined; ``n_ok`` of ``n`` seeds have it (a ``gens_to_*`` is undefined when the curve never
    got back to that fraction of its level, for ``hold`` generations, before the next switch,
    and, with ``auc``, when the level is not positive); ``n_level`` seeds had a positive level.
    With a ``floor`` (the normalised definition, :func:`selfref_ghn.run.metrics.recovery`),
    the fractions are of the way from the floor to the level, and ``n_level`` counts the
    seeds whose level is above the floor.

    Returns:
        Rows with keys ``method, switch, curve, stat, mean, ci95, n_ok, n, n_level``.
    """
    points = sorted({int(p) for iv in switch_intervals for p in iv})
    rows: list[dict[str, Any]] = []
    for method, runs in curves.items():
        per_seed = [
            recovery_curves(metrics, points, hold=hold, floor=floor)
            for _, metrics in sorted(runs.items())
        ]
        if not per_seed or not per_seed[0]:
            continue
        for i, template in enumerate(per_seed[0]):
            if floor is None:
                n_level = sum(float(rs[i]["level"]) > 0 for rs in per_seed)
            else:
                n_level = sum(rs[i]["undefined"] == "" for rs in per_seed)
            for stat in _STATS:
                vals = np.array([float(rs[i][stat]) for rs in per_seed], np.float64)
                ok = vals[np.isfinite(vals)]
                mean = float(ok.mean()) if ok.size else float("nan")
                ci = (
                    _t95(ok.size) * float(ok.std(ddof=1)) / math.sqrt(ok.size)
                    if ok.size > 1
                    else float("nan")
                )
                rows.append(
                    {
                        "method": method,
                        "switch": int(template["switch"]),
                        "curve": template["curve"],
                        "stat": stat,
                        "mean": mean,
                        "ci95": ci,
                        "n_ok": int(ok.size),
                        "n": int(vals.size),
                        "n_level": int(n_level),
                    }
                )
    return rows


def _cell(row: Mapping[str, Any]) -> str:
    if row["n_ok"] == 0:
        # recovery needs a level above 0 (raw) or the floor: with none, there is nothing to reach
        return "n/a" if row["stat"] not in ("level", "drop") and row["n_level"] == 0 else "never"
    digits = 2 if row["stat"] == "auc" else 1
    text = f"{row['mean']:.{digits}f}"
    if math.isfinite(row["ci95"]):
        text += f" ± {row['ci95']:.{digits}f}"
    if row["n_ok"] < row["n"]:
        text += f" ({row['n_ok']}/{row['n']})"
    return text


def markdown_tables(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`summarize` as markdown: one table per switch and curve."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    keys = list(dict.fromkeys((r["switch"], r["curve"]) for r in rows))
    index = {(r["method"], r["switch"], r["curve"], r["stat"]): r for r in rows}
    heads = ("level", "drop", "→50%", "→90%", "→100%", "AUC")
    parts = []
    for switch, curve in keys:
        label = "best return" if curve == "best_fitness" else curve.replace("_", " ")
        label = "mean return" if curve == "mean_fitness" else label
        parts.append(f"### Switch at generation {switch}: {label}\n")
        parts.append("| method | " + " | ".join(heads) + " |")
        parts.append("|---" * (len(heads) + 1) + "|")
        for m in methods:
            cells = [_cell(index[(m, switch, curve, s)]) for s in _STATS]
            parts.append(f"| {m} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def write_report(
    curves: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    switch_intervals: Sequence[Sequence[int]],
    out_dir: str | Path,
    hold: int = RECOVERY_HOLD,
    floor: float | None = None,
    floor_info: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``recovery.csv``, ``recovery.md`` and ``returns.png`` into ``out_dir``.

    Args:
        floor: the floor return of the normalised definition; ``None``: raw.
        floor_info: how the floor was found (:func:`~selfref_ghn.run.metrics.recovery_floor`).

    Returns:
        The paths written, by kind (``csv``, ``markdown``, ``figure``).
    """
    out = Path(out_dir)
    rows = summarize(curves, switch_intervals, hold=hold, floor=floor)
    fields = ["method", "switch", "curve", "stat", "mean", "ci95", "n_ok", "n", "n_level"]
    if floor is not None:
        # the normalised table says so in every row; the raw one keeps its columns
        fields += ["recovery", "floor"]
        rows = [{**r, "recovery": "normalised", "floor": floor} for r in rows]
    csv_path = out / "recovery.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    seeds = sorted({s for runs in curves.values() for s in runs})
    if floor is None:
        md = (
            f"Recovery after each switch: mean ± 95% interval over seeds {seeds}; →X% is the "
            f"number of generations until the curve is back to X% of its pre-switch level "
            f"(mean of the 10 generations before) and stays there for {hold} generations; "
            f"(k/n): only k of n seeds got there before the next switch or the end; AUC: mean "
            f"of curve/level after the switch; n/a: no seed had a positive level to get back "
            f"to.\n\n"
        )
    else:
        info = floor_info or {"floor": floor, "floor_policy": "given"}
        md = (
            f"Recovery after each switch, normalised: {run_metrics.floor_text(info)}. Mean ± 95% "
            f"interval over seeds {seeds}; →X% is the number of generations until the curve "
            f"is back X% of the way from the floor to its pre-switch level (mean of the 10 "
            f"generations before), i.e. (curve - floor) / (level - floor) >= X%, and stays "
            f"there for {hold} generations; (k/n): only k of n seeds got there before the next "
            f"switch or the end; AUC: mean of (curve - floor) / (level - floor) after the "
            f"switch; n/a: no seed had a level above the floor to get back to.\n\n"
        )
    md += markdown_tables(rows)
    md_path = out / "recovery.md"
    md_path.write_text(md)
    fig_path = plot_comparison(curves, switch_intervals, out / "returns.png", floor=floor)
    return {"csv": csv_path, "markdown": md_path, "figure": fig_path}


def plot_comparison(
    curves: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]],
    switch_intervals: Sequence[Sequence[int]],
    path: str | Path,
    floor: float | None = None,
) -> Path:
    """Best and mean return over generations per method: mean over seeds and 95% band (the
    t-interval of the mean, clipped to the range of the seeds' curves); the floor return of
    a normalised recovery as a dotted line, if given.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharex=True)
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap
    for ax, name, title in zip(
        axes, ("best_fitness", "mean_fitness"), ("best return", "mean return"), strict=True
    ):
        for i, (start, end) in enumerate(switch_intervals):
            ax.axvspan(start, end, color="0.85", lw=0, label="inverted" if i == 0 else None)
        if floor is not None:
            ax.axhline(floor, color="0.4", ls=":", lw=1.0, label="floor")
        for k, (method, runs) in enumerate(curves.items()):
            if not runs:
                continue
            n = min(len(r[name]) for r in runs.values())
            y = np.stack([np.asarray(r[name][:n], np.float64) for r in runs.values()])
            g = np.arange(n)
            mean = y.mean(0)
            style = "-" if method == "srghn" else ("--" if method in ABLATIONS else "-")
            width = 2.2 if method == "srghn" else 1.2
            ax.plot(g, mean, style, color=colors[k % 10], lw=width, label=method)
            if y.shape[0] > 1:
                # the t-interval, clipped to the range of the seeds' own curves
                half = _t95(y.shape[0]) * y.std(0, ddof=1) / math.sqrt(y.shape[0])
                lo, hi = np.maximum(mean - half, y.min(0)), np.minimum(mean + half, y.max(0))
                ax.fill_between(g, lo, hi, color=colors[k % 10], alpha=0.12, lw=0)
        ax.set_title(title)
        ax.set_xlabel("generation")
        ax.set_ylabel("return")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    """Add the ``compare`` subcommand to ``selfref-ghn``'s parser."""
    from selfref_ghn.tools.options import add_logger_option, add_run_options

    p = subparsers.add_parser("compare", help="SR-GHN vs ablations vs evosax baselines")
    add_run_options(p)
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated: srghn, fixed_rate, frozen_head, external, open_es, cma_es, "
        "simple_ga, gesmr_ga, samr_ga, any evosax algorithm name, or ppo (rejax's PPO, "
        "matched on environment steps; needs selfref_ghn[ppo])",
    )
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,1,5")
    add_logger_option(p)
    p.add_argument("--out", type=Path, default=None, help="results folder")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--report-only", action="store_true", help="only tabulate the runs already finished"
    )
    p.add_argument(
        "--recovery",
        choices=RECOVERY_DEFINITIONS,
        default="raw",
        help="raw: back to a fraction of the pre-switch return (default); normalised: back a "
        "fraction of the way from the floor return to it, for returns of any sign",
    )
    p.add_argument(
        "--floor",
        default=None,
        help="with --recovery normalised: random (default) or zero, the policy whose mean "
        "return over 100 episodes is the floor, or a known floor return",
    )
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    """Run ``selfref-ghn compare`` (``args`` from :func:`register`'s parser)."""
    from selfref_ghn.tools.options import config_from_args

    if args.seed is not None:
        raise ConfigError("--seed", args.seed, "compare takes --seeds")
    cfg = config_from_args(args)
    methods = parse_methods(args.methods)
    seeds = parse_seeds(args.seeds)
    if args.floor is not None and args.recovery != "normalised":
        raise ConfigError("--floor", args.floor, "only with --recovery normalised")
    floor = parse_floor(args.floor if args.floor is not None else "random")
    out = args.out or Path("results") / f"compare-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = {"progress": not args.quiet, "report_only": args.report_only, "loggers": args.logger}
    run_comparison(cfg, methods, seeds, out, **run, recovery=args.recovery, floor=floor)
    print(f"results: {out}")
    print((out / "recovery.md").read_text())
    return 0
