"""Sweeps: many runs of one preset over seeds and hyperparameters (DESIGN §4: "a sweep of many
runs fans out as a job array through an existing scheduler (Slurm via submitit), never a
home-made one").

``selfref-ghn sweep PRESET --seeds 0-15 [--grid key=v1,v2 ...] [--out DIR] [--executor ...]``

The runs are the product of the seeds and every ``--grid`` key's values. They are split in two:

* **batched**: seeds and the traced hyperparameters (the fields of
  :class:`~selfref_ghn.config.Hyperparams`: ``child_factor, std_max, update_clip, noise_std,
  param_clip, fixed_rate, external_sigma, rate_min, rate_max``) only change arrays of the
  same shape, so every such run of one group becomes one row of a leading *run* axis of the
  state (``EvoState`` carries its ``key`` and ``hparams``) and the chunk of generations is
  ``jax.vmap``-ed over it: one compiled program per group;
* **groups**: any other grid key (shapes, population, environment, ``mutation_mode``...) makes a
  separate group, and the groups are a job array through submitit: ``--executor slurm``
  (``submitit.AutoExecutor``; ``--slurm key=value`` sets its parameters, e.g.
  ``--slurm slurm_partition=gpu --slurm timeout_min=120``), ``local`` (``LocalExecutor``:
  subprocesses on this machine), ``debug`` (``DebugExecutor``: in this process, through
  submitit), or ``inline`` (default: in this process, one group after another, no submitit).

Each run writes its own results folder ``DIR/<run name>/`` with the files of a normal run
(:mod:`selfref_ghn.run.loop`: ``config.json`` with its own seed and values, ``metrics.csv``,
``lineage.bin``/``lineage.npy``, ``final_state.npz``, ``summary.json``, ``fitness.png``; no
orbax checkpoints). The sweep writes ``DIR/sweep.csv`` and ``DIR/sweep.md`` (one row per run:
final best, recovery ``gens_to_90`` and ``auc`` per switch from
:func:`selfref_ghn.run.metrics.recovery`), ``DIR/sweep_settings.md`` (mean and 95% interval over
seeds per setting) and ``DIR/sweep.png``: best return, mean ± 95% interval across seeds, one
curve per setting.

A batched run gives, seed by seed, the metrics of the same run made alone
(``tests/test_sweep.py``; ``benchmarks/bench_sweep.py`` times 16 seeds both ways).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from selfref_ghn.config import Config, ConfigError, Hyperparams, _parse_value
from selfref_ghn.run import lineage as lineage_lib
from selfref_ghn.run import tracking
from selfref_ghn.run.metrics import recovery

TRACED = tuple(f.name for f in dataclasses.fields(Hyperparams))
EXECUTORS = ("inline", "debug", "local", "slurm")


# ------------------------------------------------------------------------------- planning
def parse_seeds(text: str) -> list[int]:
    """``"0-15"``, ``"0,3,7"`` or ``"0-3,8"`` -> seeds, in order, without repeats.

    Raises:
        ConfigError: on a malformed list.

    Example:
        >>> parse_seeds("0-2,5")
        [0, 1, 2, 5]
    """
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError("--seeds", text, "a list like 0-15 or 0,3,7") from None
    if not seeds:
        raise ConfigError("--seeds", text, "at least one seed")
    return list(dict.fromkeys(seeds))


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["key=v1,v2", ...]`` -> ``{key: [v1, v2]}`` (values parsed as in ``--set``).

    A value holding commas (a list such as ``policy_hidden=[32,32]``) is kept whole when it is
    the key's only value; separate several such values with ``;``.
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--grid", item, "expected key=v1,v2,...")
        key, raw = item.split("=", 1)
        sep = ";" if ";" in raw else ("," if not raw.strip().startswith("[") else None)
        parts = raw.split(sep) if sep else [raw]
        grid[key.strip()] = [_parse_value(p.strip()) for p in parts if p.strip()]
    return grid


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its folder name, config, and grid values."""

    name: str
    config: Config
    values: tuple[tuple[str, Any], ...]


def plan(base: Config, seeds: Sequence[int], grid: Mapping[str, Sequence[Any]]) -> list[list[Run]]:
    """The sweep's runs, grouped: one group per combination of static (non-traced) values.

    Args:
        base: the preset's config.
        seeds: the seeds.
        grid: values per config key.

    Returns:
        Groups of :class:`Run`; the runs of a group differ only in seed and traced fields.

    Raises:
        ConfigError: an unknown key or a bad value (every run's config is validated).
    """
    static = [k for k in grid if k not in TRACED]
    traced = [k for k in grid if k in TRACED]
    groups = []
    for svals in itertools.product(*(grid[k] for k in static)):
        group = []
        for tvals in itertools.product(*(grid[k] for k in traced)):
            values = (*zip(static, svals, strict=True), *zip(traced, tvals, strict=True))
            for seed in seeds:
                sets = {k: json.dumps(v) for k, v in values}
                cfg = base.with_overrides({**sets, "seed": str(seed)})
                tag = "-".join(f"{k}={_tag(v)}" for k, v in values)
                group.append(Run(f"seed{seed}" + (f"-{tag}" if tag else ""), cfg, values))
        groups.append(group)
    return groups


def _tag(v: Any) -> str:
    return str(v).replace(" ", "").replace("/", "_")


# ------------------------------------------------------------------------------- one group
def run_group(runs: Sequence[Run], out_dir: str | Path | None, progress=False, loggers=None):
    """Every run of a group in one compiled program (``vmap`` over a leading run axis).

    Args:
        runs: runs differing only in seed and traced hyperparameters (one group of
            :func:`plan`).
        out_dir: the sweep folder; each run writes ``out_dir/<run.name>/``. ``None``: nothing.
        progress: print one line per chunk.
        loggers: trackers besides ``metrics.csv``, grouped by ``out_dir`` (run.tracking).

    Returns:
        ``(rows, metrics)``: one summary row per run, and per run its metric columns.
    """
    from selfref_ghn.evolution import memory
    from selfref_ghn.evolution.generation import Evolution
    from selfref_ghn.run.folder import COLUMNS, run_info, save_state, write_summary
    from selfref_ghn.run.loop import RunFiles, host_loop
    from selfref_ghn.run.plotting import plot_run

    base = runs[0].config
    evo = Evolution.create(base, devices=1)
    memory.check(evo, runs=len(runs))
    # Each run's initial state exactly as a run made alone, stacked along the run axis.
    states = [evo.init(jax.random.PRNGKey(r.config.seed), Hyperparams.from_config(r.config))
              for r in runs]  # fmt: skip
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    L, G = base.log_every, base.generations
    chunk = jax.jit(
        jax.vmap(lambda s, stop: evo.run_chunk(s, L, stop), in_axes=(0, None)), donate_argnums=0
    )
    t0 = time.perf_counter()
    compiled = chunk.lower(state, G).compile()
    compile_time = time.perf_counter() - t0

    outs = [Path(out_dir) / r.name if out_dir is not None else None for r in runs]
    for r, o in zip(runs, outs, strict=True):
        if o is None:
            continue
        o.mkdir(parents=True, exist_ok=True)
        info = {**run_info(), "sweep": {"run": r.name, "batched_runs": len(runs)}}
        (o / "config.json").write_text(
            json.dumps({**r.config.to_dict(), "_run": info}, indent=2, default=str)
        )
        lineage_lib.truncate(o / lineage_lib.FILE, base.population_size, 0, base.num_children)
        (o / "metrics.csv").unlink(missing_ok=True)  # a fresh run: RunFiles writes the header
    files = [RunFiles(o, base.population_size) for o in outs]
    for f, r in zip(files, runs, strict=True):  # W&B or TensorBoard (run.tracking)
        f.tracker = tracking.open_run(loggers, f.out, r.config, root=out_dir)

    def on_chunk(_, new_rows, dt, n) -> None:
        if progress:
            best = max(r.rows[-1]["best_fitness"] for r in files if r.rows)
            print(f"  {len(runs)} runs: gen {int(files[0].rows[-1]['generation']) + 1}/{G}, "
                  f"best {best:.2f}", flush=True)  # fmt: skip

    try:
        state, times = host_loop(
            compiled, state, G, L, files, start_generation=0, on_chunk=on_chunk
        )
    finally:
        for f in files:
            f.close()
    rows = [f.rows for f in files]
    chunk_times = [t for t, _ in times]

    steady = chunk_times[1:] or chunk_times
    gens_per_s = L / max(float(np.mean(steady)), 1e-9) if steady else 0.0
    host = jax.device_get(state)
    summaries, metrics_out = [], []
    for i, (r, o) in enumerate(zip(runs, outs, strict=True)):
        metrics = {k: np.array([row[k] for row in rows[i]]) for k in COLUMNS}
        metrics_out.append(metrics)
        switches = [p for iv in r.config.switch_windows for p in iv if p < G]
        rec = recovery(metrics["best_fitness"], switches) if rows[i] else []
        summary = {
            **evo.sizes(),
            "compile_time_s": compile_time,
            "steady_generations_per_s": gens_per_s,
            "batched_runs": len(runs),
            "generations": len(rows[i]),
            "best_fitness_final": float(metrics["best_fitness"][-1]) if rows[i] else None,
            "recovery_best": rec,
        }
        if o is not None:
            write_summary(o / "summary.json", summary)
            save_state(jax.tree.map(lambda x, i=i: x[i], host), o / "final_state.npz")
            recs = lineage_lib.read(o / lineage_lib.FILE, base.population_size)
            np.save(o / "lineage.npy", recs["selected"])
            if rows[i]:
                plot_run(metrics, o / "fitness.png", r.config.switch_windows,
                         title=f"SR-GHN on {r.config.env_id} ({r.name})")  # fmt: skip
            tracking.close(files[i].tracker, [o / "fitness.png"])
        summaries.append(_summary_row(r, summary))
    return summaries, metrics_out


def _summary_row(run: Run, summary: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"run": run.name, "seed": run.config.seed}
    row.update({k: v for k, v in run.values})
    row["final_best"] = summary["best_fitness_final"]
    for rec in summary["recovery_best"]:
        row[f"gens_to_90@{rec['switch']}"] = rec["gens_to_90"]
        row[f"auc@{rec['switch']}"] = rec["auc"]
    return row


def _run_group_job(runs: Sequence[Run], out_dir: str, loggers=None) -> list[dict[str, Any]]:
    """A submitit job: one group; returns its summary rows (metrics stay on disk)."""
    return run_group(runs, out_dir, loggers=loggers)[0]


# ------------------------------------------------------------------------------- the sweep
def run_sweep(
    base: Config,
    seeds: Sequence[int],
    grid: Mapping[str, Sequence[Any]] | None = None,
    out_dir: str | Path = "results/sweep",
    executor: str = "inline",
    executor_params: Mapping[str, Any] | None = None,
    progress: bool = True,
    loggers: str | Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Run a sweep and write its per-run folders, summary table and figure.

    Args:
        base: the preset's config.
        seeds: seeds of every setting.
        grid: values per config key (traced keys are batched, others make job groups).
        out_dir: the sweep folder.
        executor: ``inline``, ``debug``, ``local`` or ``slurm`` (module docstring).
        executor_params: passed to submitit's ``update_parameters`` (e.g. ``timeout_min``,
            ``slurm_partition``, ``gpus_per_node``).
        progress: print progress lines.
        loggers: trackers besides ``metrics.csv`` (``wandb``, ``tensorboard``), grouped by
            ``out_dir`` (:mod:`selfref_ghn.run.tracking`); a missing extra fails before any run.

    Returns:
        One summary row per run (as in ``sweep.csv``).

    Example:
        >>> rows = run_sweep(presets.get("quick"), range(4), {"child_factor": [0, 0.5]},
        ...                  "results/sw")  # doctest: +SKIP
    """
    if executor not in EXECUTORS:
        raise ConfigError("--executor", executor, f"one of {EXECUTORS}")
    groups = plan(base, seeds, grid or {})
    loggers = tracking.resolve(loggers)  # a missing extra: before any group compiles
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = sum(len(g) for g in groups)
    if progress:
        print(f"sweep: {n} runs in {len(groups)} compiled group(s), executor {executor}")
    rows: list[dict[str, Any]] = []
    if executor == "inline":
        for g in groups:
            rows.extend(run_group(g, out, progress=progress, loggers=loggers)[0])
    else:
        import submitit

        ex = submitit.AutoExecutor(folder=out / "submitit", cluster=executor)
        params = {"name": "selfref-ghn-sweep", **(executor_params or {})}
        if executor == "local" and "timeout_min" not in params:
            params["timeout_min"] = 600
        ex.update_parameters(**params)
        jobs = ex.map_array(
            _run_group_job, groups, [str(out)] * len(groups), [loggers] * len(groups)
        )
        if progress:
            print(f"submitted job array: {[j.job_id for j in jobs]}", flush=True)
        for j in jobs:
            rows.extend(j.result())
    write_summary(rows, out, base, list(grid or {}))
    return rows


def write_summary(
    rows: Sequence[Mapping[str, Any]], out_dir: Path, base: Config, keys: Sequence[str]
) -> None:
    """``sweep.csv``, ``sweep.md``, ``sweep_settings.md`` and ``sweep.png`` from the run rows."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with (out_dir / "sweep.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    (out_dir / "sweep.md").write_text(_markdown(rows, cols))
    settings: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        settings.setdefault(_setting(r, keys), []).append(r)
    (out_dir / "sweep_settings.md").write_text(settings_table(rows, keys))
    plot_sweep(out_dir, settings, base)


def _setting(row: Mapping[str, Any], keys: Sequence[str]) -> tuple:
    """A run's setting as a hashable key: list values (``policy_hidden=[64, 64]``) as tuples."""

    def frozen(v: Any) -> Any:
        return tuple(frozen(x) for x in v) if isinstance(v, (list, tuple)) else v

    return tuple((k, frozen(row.get(k))) for k in keys)


def settings_table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
    """Markdown: per setting of ``keys``, mean ± 95% interval across seeds of each statistic.

    Example:
        >>> rows = [{"child_factor": 0, "final_best": 500.0, "gens_to_90@50": 4},
        ...         {"child_factor": 0, "final_best": 480.0, "gens_to_90@50": None}]
        >>> print(settings_table(rows, ["child_factor"]).splitlines()[-1])
        | child_factor=0 | 2 | 490.00 ± 127.06 | 4.00 (1/2 seeds) |
    """
    cols = list(dict.fromkeys(k for r in rows for k in r))
    settings: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        settings.setdefault(_setting(r, keys), []).append(r)
    stats = [c for c in cols if c == "final_best" or c.startswith(("gens_to_90", "auc"))]
    table = []
    for setting, rs in settings.items():
        t = {"setting": _label(setting), "seeds": len(rs)}
        for c in stats:
            vals = [r.get(c, math.nan) for r in rs]
            m, h = mean_ci(vals)
            k = sum(v is not None and math.isfinite(float(v)) for v in vals)
            cell = "n/a" if k == 0 else f"{m:.2f}" + ("" if math.isnan(h) else f" ± {h:.2f}")
            t[c] = cell + ("" if k == len(vals) else f" ({k}/{len(vals)} seeds)")
        table.append(t)
    return (
        "Mean ± 95% interval across seeds (t distribution). Where only k of n seeds have a "
        "value (e.g. a run that never got back to 90% after a switch has no `gens_to_90`), "
        "the statistic is over those k, marked (k/n seeds).\n\n"
        + _markdown(table, ["setting", "seeds", *stats])
    )


def _label(setting: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in setting) or "all"


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its ``level`` interval (Student's t) over finite ``values``.

    Example:
        >>> m, h = mean_ci([1.0, 2.0, 3.0])
        >>> round(m, 3), round(h, 3)
        (2.0, 2.484)
    """
    x = np.asarray([v for v in values if v is not None], np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    from scipy import stats

    q = stats.t.ppf(0.5 + level / 2, len(x) - 1)
    return float(x.mean()), float(q * x.std(ddof=1) / math.sqrt(len(x)))


def _markdown(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_sweep(out_dir: Path, settings: Mapping[tuple, Sequence[Mapping]], base: Config) -> Path:
    """Best return per generation, mean ± 95% interval across seeds, per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for i, (start, end) in enumerate(base.switch_windows):
        ax.axvspan(start, end, color="tab:red", alpha=0.12, lw=0,
                   label="inverted" if i == 0 else None)  # fmt: skip
    for setting, rs in settings.items():
        curves = []
        for r in rs:
            with (out_dir / r["run"] / "metrics.csv").open(newline="") as f:
                curves.append([float(row["best_fitness"]) for row in csv.DictReader(f)])
        n = min(len(c) for c in curves)
        y = np.array([c[:n] for c in curves])
        mean = y.mean(0)
        g = np.arange(n)
        (line,) = ax.plot(g, mean, label=f"{_label(setting)} ({len(y)} seeds)")
        if len(y) > 1:
            h = stats.t.ppf(0.975, len(y) - 1) * y.std(0, ddof=1) / math.sqrt(len(y))
            ax.fill_between(g, mean - h, mean + h, alpha=0.25, color=line.get_color(), lw=0)
    ax.set_xlabel("generation")
    ax.set_ylabel("best return (mean ± 95% CI)")
    ax.set_title(f"sweep: {base.env_id}")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out_dir / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- CLI
def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--slurm", item, "expected key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = _parse_value(v)
    return out


def cmd_sweep(args: argparse.Namespace) -> int:
    from selfref_ghn.tools.options import config_from_args

    base = config_from_args(args)
    out = args.out or Path("results") / f"sweep-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    rows = run_sweep(
        base,
        parse_seeds(args.seeds),
        parse_grid(args.grid),
        out,
        executor=args.executor,
        executor_params=_parse_params(args.slurm),
        progress=not args.quiet,
        loggers=args.logger,
    )
    print((out / "sweep_settings.md").read_text(), end="")
    print(f"sweep: {len(rows)} runs in {out} (sweep.csv, sweep.md, sweep.png)", file=sys.stderr)
    return 0


def register(subparsers: Any) -> None:
    """Add ``selfref-ghn sweep``."""
    from selfref_ghn.tools.options import add_logger_option, add_run_options

    p = subparsers.add_parser("sweep", help="seeds x hyperparameters: vmapped, or a job array")
    add_run_options(p)
    p.add_argument("--seeds", default="0-3", help="e.g. 0-15 or 0,3,7 (default 0-3)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help=f"values of a config key; traced keys ({', '.join(TRACED)}) are batched",
    )
    p.add_argument("--out", type=Path, default=None, help="sweep folder")
    p.add_argument("--executor", choices=EXECUTORS, default="inline")
    p.add_argument(
        "--slurm", action="append", default=[], metavar="KEY=VALUE", help="submitit parameter"
    )
    p.add_argument("--quiet", action="store_true")
    add_logger_option(p)
    p.set_defaults(func=cmd_sweep)
