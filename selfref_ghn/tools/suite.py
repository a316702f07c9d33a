"""``selfref-ghn suite NAME``: a non-stationary benchmark suite, environments x methods x seeds
(DESIGN §3b "Suites").

A suite is a list of switching environments (an environment id, a switch rule and the
settings it needs) run with one protocol (population, children, horizon, generations, switch
windows) by every method on every seed through the comparison harness
(:func:`selfref_ghn.tools.compare.run_comparison`). ``OUT/<env>/`` is an ordinary comparison
folder (``<method>/seed<k>`` runs, ``recovery.md``, ``returns.png``) and ``OUT/`` gets:

* ``report.md``: the protocol, the command, a summary table across environments, and per
  environment its return curves (windows shaded) and recovery table;
* ``summary.csv``: the summary table's numbers;
* ``returns.png``: every environment's mean best return per method, one panel each.

Recovery is normalised (``level = (f - floor) / (pre - floor)``, the floor being a random
policy's mean return over 100 episodes, measured once per environment), because most of these
environments have negative returns (:func:`selfref_ghn.run.metrics.recovery`).

Runs go seed by seed: every environment and method on seed 0, then seed 1, ..., so an
interrupted suite has whole seeds; run it again to continue (finished runs are read back).

The suites themselves are defined in :mod:`selfref_ghn.suites`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from selfref_ghn.config import Config, ConfigError
from selfref_ghn.suites import ALL_METHODS, SUITES, Suite, get

# a window counts as recovered once the best return is back 90% of the way from the floor
RECOVERY_FRACTION = 90


# ------------------------------------------------------------------------------------- running
def run_suite(
    suite: Suite,
    out_dir: str | Path,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    overrides: Mapping[str, str] | None = None,
    envs: Sequence[str] | None = None,
    progress: bool | TextIO = True,
    report_only: bool = False,
    argv: Sequence[str] = (),
    loggers: str | Sequence[str] | None = None,
) -> dict[str, dict[str, dict[int, dict[str, np.ndarray]]]]:
    """Run (or read back) every environment x method x seed of ``suite``, then write the report.

    Args:
        suite: the suite (:func:`get`).
        out_dir: the suite's results folder.
        methods, seeds: default the suite's own.
        overrides: ``--set`` fields applied to every environment's config.
        envs: only these of the suite's environments (by name); default all.
        progress: print progress lines (``True``: stdout; or a stream; ``False``: quiet).
        report_only: run nothing; report on the runs that have finished.
        argv: the command line, recorded in the report.
        loggers: trackers besides ``metrics.csv`` (``wandb``, ``tensorboard``;
            :mod:`selfref_ghn.run.tracking`), one group per environment.

    Returns:
        ``curves[env][method][seed]``: each run's metric columns.

    Raises:
        ConfigError: a bad method, environment or field (before anything compiles).
    """
    from selfref_ghn.run.tracking import resolve
    from selfref_ghn.tools.compare import method_config, run_comparison

    methods = list(methods or suite.methods)
    seeds = list(suite.seeds if seeds is None else seeds)
    if not seeds:
        raise ConfigError("--seeds", seeds, "at least one seed")
    configs = suite.configs(overrides)
    if envs:
        unknown = [e for e in envs if e not in configs]
        if unknown:
            raise ConfigError("--envs", ",".join(unknown), f"names of {list(configs)}")
        configs = {k: v for k, v in configs.items() if k in envs}
    for cfg in configs.values():  # every (env, method) validated before any run
        for m in methods:
            method_config(cfg, m)
    resolve(loggers)  # a missing extra: one message before any floor is measured
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stream = sys.stdout if progress is True else (progress or None)
    (out / "suite.json").write_text(
        json.dumps(
            {
                "suite": suite.name,
                "methods": methods,
                "seeds": seeds,
                "overrides": dict(overrides or {}),
                "envs": list(configs),
                "argv": list(argv),
            },
            indent=2,
        )
    )
    floors = {}
    for name, cfg in configs.items():
        floors[name] = _floor(cfg, out / name, report_only)
    curves: dict[str, dict[str, dict[int, dict[str, np.ndarray]]]] = {}
    t0 = time.perf_counter()
    # seed by seed, so that an interrupted suite has every environment on its first seeds
    for i in range(1 if report_only else len(seeds)):
        done = seeds if report_only else seeds[: i + 1]
        for k, (name, cfg) in enumerate(configs.items()):
            if stream:
                print(
                    f"[suite {suite.name}] seed {done[-1]} ({i + 1}/{len(seeds)}), {name} "
                    f"({k + 1}/{len(configs)}), {time.perf_counter() - t0:.0f} s so far",
                    file=stream,
                    flush=True,
                )
            value, info = floors[name]
            curves[name] = run_comparison(
                cfg,
                methods,
                done,
                out / name,
                progress=stream or False,
                report_only=report_only,
                recovery="normalised",
                floor=value if value is not None else "random",
                floor_info=info,
                loggers=loggers,
            )
    rows = summary_rows(curves, configs, {k: v for k, (v, _) in floors.items()})
    write_report(suite, out, curves, configs, floors, rows, methods, seeds, argv)
    return curves


def _floor(cfg: Config, env_dir: Path, report_only: bool) -> tuple[float | None, dict | None]:
    """The environment's floor return, measured once and kept in ``env_dir/floor.json``."""
    from selfref_ghn.run.metrics import recovery_floor

    path = env_dir / "floor.json"
    try:
        info = json.loads(path.read_text())
        if info.get("env_id") == cfg.env_id and math.isfinite(float(info["floor"])):
            return float(info["floor"]), info
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged: measured again
    if report_only:
        return None, None
    value, info = recovery_floor(cfg, "normalised", "random")
    env_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2))
    return value, info


def summary_rows(
    curves: Mapping[str, Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]],
    configs: Mapping[str, Config],
    floors: Mapping[str, float | None],
) -> list[dict[str, Any]]:
    """Per method, across environments: the median generations to recover, the fraction of
    windows recovered, and each environment's mean best return.

    A *window* is one switch of one run (into or out of a switched interval). It is
    *recovered* when the best return gets back 90% of the way from the floor to its
    pre-switch level and stays there for 10 generations before the next switch
    (:func:`selfref_ghn.run.metrics.recovery`, normalised); windows whose pre-switch level
    was not above the floor are left out (nothing to recover). The median counts windows
    never recovered as infinitely slow, so it is ``inf`` when half or more never recovered.

    Returns:
        One row per method: ``method, windows, recovered, median_gens_to_90`` and
        ``return:<env>`` (the best return averaged over generations and seeds).
    """
    from selfref_ghn.run.metrics import recovery_curves
    from selfref_ghn.tools.compare import RECOVERY_HOLD

    methods = list(dict.fromkeys(m for env in curves.values() for m in env))
    rows = []
    for m in methods:
        gens: list[float] = []
        row: dict[str, Any] = {"method": m}
        for env, cfg in configs.items():
            runs = curves.get(env, {}).get(m, {})
            points = sorted({int(p) for iv in cfg.switch_windows for p in iv})
            for metrics in runs.values():
                for r in recovery_curves(
                    metrics, points, ("best_fitness",), hold=RECOVERY_HOLD, floor=floors[env]
                ):
                    if r.get("undefined", "") == "":
                        g = float(r[f"gens_to_{RECOVERY_FRACTION}"])
                        gens.append(g if math.isfinite(g) else math.inf)
            best = [np.mean(np.asarray(r["best_fitness"], np.float64)) for r in runs.values()]
            row[f"return:{env}"] = float(np.mean(best)) if best else float("nan")
            row[f"seeds:{env}"] = len(best)
        row["windows"] = len(gens)
        row["recovered"] = sum(math.isfinite(g) for g in gens)
        row["median_gens_to_90"] = float(np.median(gens)) if gens else float("nan")
        rows.append(row)
    return rows


def summary_table(rows: Sequence[Mapping[str, Any]], envs: Sequence[str]) -> str:
    """:func:`summary_rows` as a markdown table."""
    head = ["method", "median gens →90%", "windows recovered", *envs]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for r in rows:
        med = r["median_gens_to_90"]
        med_text = "never" if med == math.inf else ("n/a" if math.isnan(med) else f"{med:.0f}")
        frac = f"{r['recovered']}/{r['windows']}" if r["windows"] else "n/a"
        if r["windows"]:
            frac += f" ({100 * r['recovered'] / r['windows']:.0f}%)"
        rets = [
            f"{r[f'return:{e}']:.1f}" if r[f"seeds:{e}"] else "–"
            for e in envs  # noqa: RUF001
        ]
        lines.append("| " + " | ".join([r["method"], med_text, frac, *rets]) + " |")
    return "\n".join(lines)


def write_report(
    suite: Suite,
    out: Path,
    curves: Mapping[str, Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]],
    configs: Mapping[str, Config],
    floors: Mapping[str, tuple[float | None, Mapping | None]],
    rows: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    seeds: Sequence[int],
    argv: Sequence[str] = (),
) -> Path:
    """Write ``report.md``, ``summary.csv`` and ``returns.png`` into ``out``."""
    import csv

    from selfref_ghn.run.metrics import floor_text

    envs = list(configs)
    if rows:
        keys = list(rows[0])
        with (out / "summary.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    plot_suite(curves, configs, out / "returns.png", {k: v for k, (v, _) in floors.items()})
    first = next(iter(configs.values()))
    lines = [
        f"# Suite `{suite.name}`\n",
        f"{suite.description}.\n",
        f"Command: `{' '.join(argv) or 'selfref-ghn suite ' + suite.name}`\n",
        f"Methods: {', '.join(methods)}; seeds {list(seeds)}; population {first.population_size}"
        f", children per parent {first.num_children}, horizon {first.horizon}, "
        f"{first.generations} generations, switched during "
        f"{[list(w) for w in first.switch_windows]}.\n",
        "## Summary across environments\n",
        "A window is one switch (into or out of a switched interval) of one run; it is "
        "recovered when the best return is back 90% of the way from the environment's floor "
        "(a random policy's return) to its pre-switch level, and stays there for 10 "
        "generations, before the next switch. Windows whose pre-switch level was not above "
        "the floor are not counted. Median: generations to recover, over all windows, never "
        "recovered counting as infinitely slow. The environment columns are the best return "
        "averaged over all generations and seeds.\n",
        summary_table(rows, envs),
        "",
        "![returns](returns.png)\n",
    ]
    for env, cfg in configs.items():
        value, info = floors[env]
        rule = cfg.switch + (f" {dict(cfg.switch_options)}" if cfg.switch_options else "")
        lines.append(f"## {env}\n")
        lines.append(f"Switch: `{rule}`; {floor_text(info) if info else 'floor not measured'}.\n")
        lines.append(f"![{env}]({env}/returns.png)\n")
        md = out / env / "recovery.md"
        if md.exists():
            text = md.read_text().replace("### ", "#### ")
            lines.append(text)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_suite(
    curves: Mapping[str, Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]],
    configs: Mapping[str, Config],
    path: Path,
    floors: Mapping[str, float | None] | None = None,
) -> Path:
    """One panel per environment: mean best return over seeds per method, windows shaded,
    the floor return dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(configs)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap
    methods = list(dict.fromkeys(m for env in curves.values() for m in env))
    for ax, (env, cfg) in zip(axes.flat, configs.items(), strict=False):
        for start, end in cfg.switch_windows:
            ax.axvspan(start, end, color="0.88", lw=0)
        floor = (floors or {}).get(env)
        if floor is not None:
            ax.axhline(floor, color="0.4", ls=":", lw=1.0, label="floor")
        for k, m in enumerate(methods):
            runs = curves.get(env, {}).get(m, {})
            if not runs:
                continue
            g = min(len(r["best_fitness"]) for r in runs.values())
            y = np.mean([np.asarray(r["best_fitness"][:g], np.float64) for r in runs.values()], 0)
            width = 2.0 if m == "srghn" else 1.0
            ax.plot(np.arange(g), y, color=colors[k % 10], lw=width, label=m)
        ax.set_title(env, fontsize=10)
        ax.set_xlabel("generation")
        ax.set_ylabel("best return")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab, strict=True):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 10), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ CLI
def register(subparsers: Any) -> None:
    """Add the ``suite`` subcommand to ``selfref-ghn``'s parser."""
    from selfref_ghn.tools.options import add_logger_option

    p = subparsers.add_parser("suite", help="a non-stationary benchmark suite (envs x methods)")
    p.add_argument("name", help=f"one of: {', '.join(sorted(SUITES))}")
    p.add_argument("--out", type=Path, default=None, help="results folder")
    p.add_argument("--methods", default=None, help=f"default: {','.join(ALL_METHODS)}")
    p.add_argument("--seeds", default=None, help="e.g. 0-2 (default: the suite's)")
    p.add_argument("--envs", default=None, help="only these environments (comma-separated)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--report-only", action="store_true", help="only report on the runs already finished"
    )
    p.add_argument("--list", action="store_true", help="print the suite's configs and exit")
    add_logger_option(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.set_defaults(func=cmd_suite)


def cmd_suite(args: Any) -> int:
    """Run ``selfref-ghn suite`` (``args`` from :func:`register`'s parser)."""
    from selfref_ghn.tools.compare import parse_methods, parse_seeds
    from selfref_ghn.tools.options import parse_sets

    suite = get(args.name)
    overrides = parse_sets(args.set)
    methods = parse_methods(args.methods) if args.methods else None
    seeds = parse_seeds(args.seeds) if args.seeds else None
    envs = [e.strip() for e in args.envs.split(",") if e.strip()] if args.envs else None
    if args.list:
        for name, cfg in suite.configs(overrides).items():
            print(f"{name}: {json.dumps(cfg.to_dict(), default=str)}")
        return 0
    out = args.out or Path("results") / f"suite-{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = ["selfref-ghn", "suite", *sys.argv[2:]] if len(sys.argv) > 1 else []
    run_suite(
        suite,
        out,
        methods=methods,
        seeds=seeds,
        overrides=overrides,
        envs=envs,
        progress=not args.quiet,
        report_only=args.report_only,
        argv=argv,
        loggers=args.logger,
    )
    print(f"report: {out / 'report.md'}")
    return 0
